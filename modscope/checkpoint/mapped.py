"""Read-only shared maps of checkpoint files, viewed one window at a time without copying (used by diffs).

A window's pages are faulted in ahead of use (``MADV_POPULATE_READ``, normally on a reader thread) and
taken out of the process's page tables once used (``MADV_DONTNEED``): the data stays in the page cache,
resident memory stays at the windows in use. Views pin their map, so closing never unmaps a live view.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import warnings

import numpy as np
import torch

from modscope.checkpoint.base import READ_AHEAD
from modscope.errors import CheckpointError


class FileMaps:
    """Read-only shared maps of whole files, viewed a window at a time.

    ``view`` faults the window's pages in (so comparing never waits on the disk) and ``release`` takes them
    out of the page tables again: the data stays in the page cache, but not in this process's resident
    memory, however big the files are.
    """

    def __init__(self):
        self._maps: dict[str, mmap.mmap | None] = {}

    def view(self, path: str, offset: int, nbytes: int) -> torch.Tensor | None:
        """A uint8 tensor over ``nbytes`` of ``path`` at ``offset``, or None (then the caller reads instead)."""
        mm = self._maps.get(path, False)
        if mm is False:
            mm = self._maps[path] = _map(path)
        if mm is None or offset + nbytes > len(mm):
            return None  # not mappable, or truncated: plain reads give the proper error
        start = offset - offset % mmap.PAGESIZE
        try:
            mm.madvise(_MADV_POPULATE_READ, start, offset + nbytes - start)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                return None  # e.g. EFAULT: the file shrank under the map; plain reads say so cleanly
            _touch(mm, start, offset + nbytes)  # a kernel without MADV_POPULATE_READ
        ahead = -(-(offset + nbytes) // mmap.PAGESIZE) * mmap.PAGESIZE
        if ahead < len(mm):  # keep the disk busy with what comes next while this window is compared
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_WILLNEED, ahead, min(READ_AHEAD, len(mm) - ahead))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "non-writable buffer": the views are only ever read
            # Through a memoryview: it holds the map's buffer exported, so close() cannot unmap it under a
            # view that a comparison thread may still be reading (the map then goes with its last view).
            return torch.frombuffer(memoryview(mm)[offset : offset + nbytes], dtype=torch.uint8)

    def release(self, path: str, offset: int, nbytes: int) -> None:
        mm = self._maps.get(path)
        if mm is not None:
            start = offset - offset % mmap.PAGESIZE
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, start, offset + nbytes - start)

    def close(self) -> None:
        for mm in self._maps.values():
            if mm is not None:
                with contextlib.suppress(BufferError):  # a view still alive: the map goes when it does
                    mm.close()
        self._maps.clear()


_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14


def _map(path: str) -> mmap.mmap | None:
    if not hasattr(mmap.mmap, "madvise"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO swapped in since it was checked
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # plain reads give the proper error
        return mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def check_sizes(mapped: list[tuple[str, int, int]]) -> None:
    """Mapped pages past a file's end fault (SIGBUS) when read: refuse a read whose file has shrunk since."""
    ends: dict[str, int] = {}
    for path, offset, nbytes in mapped:
        ends[path] = max(ends.get(path, 0), offset + nbytes)
    for path, end in ends.items():
        size = _size(path)
        if size < end:
            raise CheckpointError(f"{path} changed while being read: it is now {max(size, 0)} bytes (was it re-saved?)")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _touch(mm: mmap.mmap, start: int, end: int) -> None:
    pages = np.frombuffer(mm, dtype=np.uint8, count=end - start, offset=start)
    int(pages[:: mmap.PAGESIZE].max())
