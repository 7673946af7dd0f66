"""The ``modscope`` command line: one small module per command group, all thin front doors over reports.

Nothing here imports torch at module level, so ``modscope --help`` stays fast.
"""
from __future__ import annotations

from modscope.cli.app import app
from modscope.cli import static_commands  # noqa: F401  (registers summary/tree/shared/audit)
from modscope.cli import checkpoint_commands  # noqa: F401  (registers diff/check)
from modscope.cli import graph_commands  # noqa: F401  (registers graph)
from modscope.cli import training_commands  # noqa: F401  (registers grads/nan/time)


def main() -> None:
    app()


__all__ = ["app", "main"]
