"""``python -m circuitforge`` runs the CLI."""

from circuitforge.cli import main

main()
