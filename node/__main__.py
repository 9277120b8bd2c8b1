"""`python -m node ...` is the `counters` command."""

from node.cli import main

main()
