"""The reader interface every checkpoint format implements, and the file-reading pieces they share.

A reader lists its tensors (``entries``: name -> TensorMeta) from headers/metadata alone, and reads values
only when asked: ``read`` gives a whole tensor (memory-mapped where the format allows), ``read_into`` fills
a caller's buffer with a flat range of elements using plain file reads, so a diff can stream two huge
files through two small buffers without either file's pages piling up in memory.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from math import prod
from typing import Hashable

import torch

from modscope.checkpoint.guard import open_regular, regular_file
from modscope.errors import CheckpointError


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Shape and dtype of one stored tensor, and which bytes it lives in.

    ``storage`` identifies the stored buffer (equal values: the same bytes, e.g. tied weights saved once);
    ``offset`` is the tensor's first element within it, in bytes.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    storage: Hashable = None
    offset: int = 0

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class CheckpointReader(ABC):
    """One checkpoint format. Names are the file's own, nested containers joined with dots."""

    #: short format name shown to users: "safetensors", "torch", "torch-legacy", "index", "dcp", "model"
    format: str = ""

    def __init__(self, path: str):
        self.path = path
        self._flat: tuple[str, torch.Tensor] | None = None  # the last tensor flattened by ``read_into``

    @abstractmethod
    def entries(self) -> dict[str, TensorMeta]:
        """Every tensor, from headers/metadata only."""

    def containers(self):
        """The nesting of dicts the tensors were saved in (a ``nested.Node``), or None for a flat file."""
        return None

    def metadata(self) -> dict | None:
        """The ``_metadata`` (per-module versions) a pickled state_dict carries, keyed by full name prefix."""
        return None

    @abstractmethod
    def read(self, name: str) -> torch.Tensor:
        """The whole tensor on CPU (a read-only-by-contract memory map where possible: do not write to it)."""

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        """Fill 1-D ``out`` (of the entry's dtype) with elements ``start .. start + len(out)`` in row-major order.

        This fallback flattens the whole tensor (kept for the next call: a scan reads one tensor in many
        ranges); readers of file formats override it with plain file reads.
        """
        cached = self._flat
        if cached is None or cached[0] != name:
            cached = self._flat = (name, self.read(name).reshape(-1))
        out.copy_(cached[1][start : start + out.numel()])

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        """(file, byte offset) where elements ``start .. start + count`` of ``name`` are stored raw, contiguous
        and in order, so a scan can view them in place; None where they are not, or the format cannot say."""
        return None

    def close(self) -> None:
        """Release open files and maps."""
        self._flat = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- plain file reads ------------------------------------------------------------------------------------


#: how far past a read the kernel is asked to start reading the same file (sequential scans: diff, hashing)
READ_AHEAD = 64 << 20


class FileSpans:
    """Reads byte ranges of files with ``pread`` (no mmap, so nothing stays resident) and maps whole files
    privately for zero-copy ``tensor`` views. Holds one descriptor per file until ``close``.

    After each read the kernel is told the next ``READ_AHEAD`` bytes will be wanted (``POSIX_FADV_WILLNEED``),
    so a scan of two files on disk keeps both streaming while the caller computes.
    """

    def __init__(self):
        self._fds: dict[str, int] = {}
        self._maps: dict[str, torch.UntypedStorage] = {}
        self._advised: dict[str, int] = {}  # per file: the end of the range already announced

    def read_into(self, path: str, offset: int, out: torch.Tensor) -> None:
        """Fill contiguous ``out`` with the bytes of ``path`` starting at ``offset``."""
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        fd = self._fd(path)
        if offset < 0:
            raise CheckpointError(f"{path}: a read at offset {offset} was asked for (corrupt checkpoint metadata)")
        done = 0
        while done < len(view):
            try:
                got = os.preadv(fd, [view[done:]], offset + done)
            except OSError as exc:
                raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
            if got <= 0:
                raise CheckpointError(f"{path} ends early: expected {len(view)} bytes at offset {offset} (truncated?)")
            done += got
        self._read_ahead(path, fd, offset + done)

    def _read_ahead(self, path: str, fd: int, end: int) -> None:
        advised = self._advised.get(path, 0)
        if not hasattr(os, "posix_fadvise") or end + READ_AHEAD // 2 <= advised <= end + READ_AHEAD:
            return  # well inside the window already announced
        start = advised if end < advised < end + READ_AHEAD else end
        os.posix_fadvise(fd, start, end + READ_AHEAD - start, os.POSIX_FADV_WILLNEED)
        self._advised[path] = end + READ_AHEAD

    def tensor(self, path: str, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor over the file's bytes (copy-on-write private map: the file itself never changes)."""
        nbytes = prod(shape) * dtype.itemsize
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        if offset % dtype.itemsize:  # unaligned data cannot be viewed in place
            out = torch.empty(shape, dtype=dtype)
            self.read_into(path, offset, out)
            return out
        storage = self._maps.get(path)
        if storage is None:
            size = os.fstat(self._fd(path)).st_size  # a regular file: checked when its descriptor was opened
            storage = torch.UntypedStorage.from_file(path, False, size) if size else torch.UntypedStorage(0)
            self._maps[path] = storage
        if offset < 0 or offset + nbytes > storage.nbytes():
            raise CheckpointError(
                f"{path} is truncated: {nbytes} bytes at offset {offset} do not fit in its {storage.nbytes()} bytes"
            )
        flat = torch.empty(0, dtype=dtype).set_(storage, offset // dtype.itemsize, (prod(shape),), (1,))
        return flat.view(shape)

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = open_regular(path)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._maps.clear()


def file_size(path: str) -> int:
    """Size of a regular file (anything else, or a file that cannot be read, is one CheckpointError line)."""
    return regular_file(path).st_size
