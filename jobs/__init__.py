"""The job queue: what to scan, where results go, and the CLI."""
