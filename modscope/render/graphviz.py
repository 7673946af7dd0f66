"""Running Graphviz's ``dot``: a time limit, and never a ``dot`` left running after modscope has ended.

The limit is the ``timeout`` given (``modscope graph --dot-timeout``), else ``MODSCOPE_DOT_TIMEOUT``, else
``DEFAULT_TIMEOUT`` seconds; 0 means no limit. On Linux the child asks the kernel to SIGKILL it when its
parent dies (``PR_SET_PDEATHSIG``), so a modscope ended by SIGTERM or SIGKILL takes ``dot`` with it; on a
timeout or an exception in modscope (Ctrl-C included) ``dot`` is killed and reaped before the error goes up.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

from modscope.errors import RenderError, UsageError

DEFAULT_TIMEOUT = 120.0  # seconds; densenet121's dataflow graph takes ~15-40 s of CPU with the large layout
TIMEOUT_ENV = "MODSCOPE_DOT_TIMEOUT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def dot_timeout(timeout: float | None = None) -> float | None:
    """The limit in seconds, or None for none: ``timeout``, else $MODSCOPE_DOT_TIMEOUT, else the default."""
    where = "--dot-timeout"
    if timeout is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT
        where = TIMEOUT_ENV
        try:
            timeout = float(raw)
        except ValueError:
            raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds: give e.g. 300, or 0 for no limit")
    if not math.isfinite(timeout) or timeout < 0:
        raise UsageError(f"{where} must be a number of seconds, 0 or more (0: no limit), got {timeout!r}")
    return float(timeout) or None


def run_dot(dot: str, args: list[str], source: bytes, timeout: float | None) -> subprocess.CompletedProcess:
    """Run ``dot args`` on ``source``; RenderError once ``timeout`` seconds pass (dot is killed then)."""
    try:
        return subprocess.run(
            [dot, *args], input=source, capture_output=True, check=False, timeout=timeout,
            preexec_fn=_die_with_parent(),
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped dot
        raise RenderError(
            f"Graphviz's dot did not finish within {timeout:g} s and was stopped: draw less with --depth N, "
            f"write the DOT text with --format dot, or allow more time with --dot-timeout SECONDS "
            f"({TIMEOUT_ENV}; 0 = no limit)"
        ) from None


def _die_with_parent():
    """A preexec_fn that makes the child get SIGKILL when modscope dies (Linux); None elsewhere.

    Everything is looked up before the fork, so the child only makes two system calls. Should modscope have
    died between the fork and prctl, the child sees a new parent and exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return in_child
