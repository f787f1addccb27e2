"""``python -m apprank`` runs the CLI."""

from apprank.cli import main

main()
