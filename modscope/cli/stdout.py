"""While a command speaks JSON (or DOT on stdout), stdout carries that document alone.

A model file, constructor or forward may print: Python's ``print`` or C code writing to file descriptor 1.
From the start of such a command until its document is written, ``sys.stdout`` and fd 1 both point at
stderr, so those prints land there. ``real_stdout()``, called by whatever writes the document, gives
stdout back; it is the one place that restores it (the context manager calls it too, on any exit).
"""
from __future__ import annotations

import contextlib
import os
import sys

_saved: tuple[object, int | None] | None = None  # (the real sys.stdout, a duplicate of the real fd 1)


@contextlib.contextmanager
def prints_to_stderr(active: bool):
    """Send stdout to stderr for the block when ``active`` (a no-op when not, or when already sending)."""
    global _saved
    if not active or _saved is not None:
        yield
        return
    _flush_all()
    _saved = (sys.stdout, _redirect_fd1())
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        real_stdout()


def real_stdout():
    """Restore sys.stdout and fd 1 (when redirected) and return sys.stdout, ready for the document."""
    global _saved
    if _saved is not None:
        stream, fd = _saved
        _saved = None
        _flush_all()
        if fd is not None:
            os.dup2(fd, 1)
            os.close(fd)
        sys.stdout = stream
    return sys.stdout


def _redirect_fd1() -> int | None:
    """Point fd 1 at fd 2 when sys.stdout really is fd 1; returns a duplicate of the old fd 1 (or None)."""
    try:
        if sys.stdout.fileno() != 1 or sys.stderr.fileno() != 2:
            return None  # stdout replaced in-process (a test runner): redirecting sys.stdout is enough
        saved = os.dup(1)
    except (AttributeError, OSError, ValueError):
        return None
    os.dup2(2, 1)
    return saved


def _flush_all() -> None:
    """Flush Python's streams and C's stdio buffers, so nothing printed so far crosses the switch."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (some platforms): Python's flush is it
        pass
