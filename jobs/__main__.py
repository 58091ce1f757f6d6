"""`python -m aiscan.jobs` is the `aiscan` command."""

from aiscan.jobs.cli import main

main()
