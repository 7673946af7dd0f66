"""The ``modscope`` command line: one small module per command group, all thin front doors over reports.

Nothing here imports torch at module level, so ``modscope --help`` stays fast.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

from modscope.cli.app import app
from modscope.cli import static_commands  # noqa: F401  (registers summary/tree/shared/audit)
from modscope.cli import checkpoint_commands  # noqa: F401  (registers diff/check)
from modscope.cli import graph_commands  # noqa: F401  (registers graph)
from modscope.cli import training_commands  # noqa: F401  (registers grads/nan/time)
from modscope.cli import schema_command  # noqa: F401  (registers schema)
from modscope.cli import report_commands  # noqa: F401  (registers report)


def main() -> None:
    current_folder_first()
    try:
        app()
    except SystemExit as done:
        _leave(done.code)
    _leave(0)


def current_folder_first() -> None:
    """Put the current folder first on ``sys.path``, as ``python -m modscope`` does, so ``package.module:Name``
    (and the classes a pickled model names) resolve the same from the ``modscope`` script as from ``python -m``."""
    cwd = os.getcwd()
    if not sys.path or os.path.abspath(sys.path[0] or os.curdir) != cwd:
        sys.path.insert(0, cwd)


def _leave(code) -> None:
    """Exit with ``code`` once the command is done, without tearing torch down when it was imported.

    Tearing down torch's modules and C++ state takes ~0.4 s and touches ~125 MB of pages after all the
    work is done. As at a normal exit, non-daemon threads are joined first, then atexit handlers (logging,
    temporary files, user code's own) run and the standard streams are flushed; only the interpreter's own
    finalization is skipped.
    """
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if "torch" not in sys.modules:
        raise SystemExit(code)
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is not None:  # what the interpreter does first: join non-daemon threads
        shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `| head`) or a closed stream: nothing to lose
            pass
    os._exit(code or 0)


__all__ = ["app", "main", "current_folder_first"]
