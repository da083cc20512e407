"""``python -m convlens``: the command line."""

from convlens.cli import main

main()
