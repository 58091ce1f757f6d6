"""`python -m jobs` is the `aiscan` command."""

from jobs.cli import main

main()
