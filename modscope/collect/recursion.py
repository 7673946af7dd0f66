"""Room on Python's stack for a forward that recurses once per module level (``self.child(x)``, 2,000 deep).

Python counts about 4 frames per nested module call (5 with modscope's hooks), so past ~200 levels the
default limit of 1,000 is hit: the model would fail the same way in the user's own code. ``recursion_room``
raises ``sys.setrecursionlimit`` for one analysis (this is the one place modscope changes it, and it puts
the old value back), but only as far as the thread's C stack holds safely (see docs/forward.md): beyond that
the forward raises RecursionError, reported like any other failure, instead of crashing the interpreter.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator

#: frames allowed per level of the module tree (measured: 4 per nested call, 5 with modscope's hooks)
FRAMES_PER_LEVEL = 8
#: C stack budgeted per frame the limit allows (measured: at most ~370 bytes in a nested module call)
BYTES_PER_FRAME = 512
_MAIN_UNKNOWN = 1 << 20  # a main thread whose stack size cannot be read (no resource module)
_UNLIMITED = 64 << 20  # ``ulimit -s unlimited``: assume this much
_THREAD_DEFAULT = 2 << 20  # a thread started without threading.stack_size()


def stack_bytes() -> int:
    """The C stack this thread has: RLIMIT_STACK on the main thread, ``threading.stack_size()`` otherwise."""
    if threading.current_thread() is not threading.main_thread():
        return threading.stack_size() or _THREAD_DEFAULT
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    except (ImportError, OSError, ValueError):
        return _MAIN_UNKNOWN
    return _UNLIMITED if soft == resource.RLIM_INFINITY or soft <= 0 else soft


def frame_limit(depth: int) -> int:
    """The recursion limit an analysis of a ``depth``-deep module tree runs under (never below the current)."""
    current = sys.getrecursionlimit()
    return max(current, min(current + depth * FRAMES_PER_LEVEL, stack_bytes() // BYTES_PER_FRAME))


@contextlib.contextmanager
def recursion_room(depth: int) -> Iterator[int]:
    """Raise the recursion limit for a ``depth``-deep module tree while active; yields the limit in force.

    >>> with recursion_room(max(v.depth for v in visits(model))):
    ...     output = model(x)
    """
    old = sys.getrecursionlimit()
    new = frame_limit(depth)
    if new == old:
        yield old
        return
    sys.setrecursionlimit(new)
    try:
        yield new
    finally:
        sys.setrecursionlimit(old)


def recursion_note(error: BaseException, depth: int) -> str:
    """A hint to append to the message of a RecursionError raised inside ``recursion_room(depth)``."""
    if not isinstance(error, RecursionError):
        return ""
    return (
        f" (the module tree is {depth:,} levels deep; modscope allowed {frame_limit(depth):,} Python frames, as many as this thread's "
        f"{stack_bytes() >> 20} MiB C stack holds; a bigger stack, `ulimit -s`, allows deeper models)"
    )
