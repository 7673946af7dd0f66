"""``python -m modscope`` runs the CLI (used by the tests to call the real command line)."""
from modscope.cli import main

main()
