"""``torch.distributed.checkpoint`` (DCP) directories: a pickled ``.metadata`` plus ``*.distcp`` data files.

``.metadata`` is unpickled safely and validated by ``dcp_metadata`` (types, chunk boxes, data files inside
the folder, byte ranges inside the files). Each stored chunk is a small ``torch.save`` archive (or raw
bytes) at an offset of a data file; values are read by file offset, chunk by chunk, like any other format.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from math import prod

import torch

from modscope.checkpoint import nested
from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta
from modscope.checkpoint.dcp_metadata import METADATA, Chunk, check, read_metadata
from modscope.checkpoint.torchfile import ZIP_MAGIC, load_pickled
from modscope.errors import CheckpointError

__all__ = ["DcpReader", "METADATA", "read_metadata"]


@dataclass(frozen=True)
class _Piece:
    """A run of a tensor's row-major elements stored contiguously in one file."""

    first: int  # index of its first element in the whole tensor
    count: int
    file: str
    offset: int  # byte offset of that first element in the file


class DcpReader(CheckpointReader):
    format = "dcp"

    def __init__(self, folder: str, *, trust: bool = False):
        super().__init__(folder)
        self._trust = trust
        self._files = FileSpans()
        checked = check(*read_metadata(folder, trust=trust), folder)
        self.others = checked.others  # names saved as pickled bytes (step counters, param groups)
        self._entries: dict[str, TensorMeta] = {}
        self._chunks: dict[str, list[Chunk]] = {}
        for fqn, (shape, dtype, chunks) in checked.tensors.items():
            self._entries[fqn] = TensorMeta(shape, dtype, storage=(folder, fqn))
            self._chunks[fqn] = chunks
        scalars = {n for n, m in self._entries.items() if not m.shape}
        self._root = nested.build(checked.paths, set(self._entries), scalars)
        self._pieces: dict[str, list[_Piece] | None] = {}
        self._starts: dict[tuple[str, int], int] = {}  # (file, chunk offset) -> byte of its first element

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def containers(self):
        return self._root

    def read(self, name: str) -> torch.Tensor:
        meta = self._entries[name]
        pieces = self._layout(name)
        if pieces is not None and len(pieces) == 1:
            return self._files.tensor(pieces[0].file, pieces[0].offset, meta.shape, meta.dtype)
        out = torch.empty(meta.shape, dtype=meta.dtype)
        if pieces is None:
            self._assemble(name, out)
        elif out.numel():
            self.read_into(name, 0, out.view(-1))
        return out

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        pieces = self._layout(name)
        if pieces is None:  # chunks split a later dim: assemble only the rows this range touches
            from modscope.checkpoint.dcp_layout import read_rows_into

            return read_rows_into(self, name, start, out)
        end = start + out.numel()
        itemsize = out.element_size()
        for piece in pieces:
            lo, hi = max(start, piece.first), min(end, piece.first + piece.count)
            if lo < hi:
                self._files.read_into(piece.file, piece.offset + (lo - piece.first) * itemsize, out[lo - start : hi - start])

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        itemsize = self._entries[name].dtype.itemsize
        for piece in self._layout(name) or ():
            if piece.first <= start and start + count <= piece.first + piece.count:
                return piece.file, piece.offset + (start - piece.first) * itemsize
        return None

    def close(self) -> None:
        super().close()
        self._files.close()

    # --- where the bytes are ---------------------------------------------------------------------------

    def _layout(self, name: str) -> list[_Piece] | None:
        """Contiguous pieces when chunks split the tensor along dim 0 only (or not at all), else None."""
        if name not in self._pieces:
            meta = self._entries[name]
            chunks = sorted(self._chunks[name], key=lambda c: c.offsets)
            row = prod(meta.shape[1:]) if meta.shape else 1
            if all(c.sizes[1:] == meta.shape[1:] and not any(c.offsets[1:]) for c in chunks):
                self._pieces[name] = [
                    _Piece(c.offsets[0] * row if c.offsets else 0, prod(c.sizes), c.file, self._data_offset(name, c))
                    for c in chunks
                ]
            else:
                self._pieces[name] = None
        return self._pieces[name]

    def _assemble(self, name: str, out: torch.Tensor) -> None:
        for c in self._chunks[name]:
            region = out
            for dim, (o, s) in enumerate(zip(c.offsets, c.sizes)):
                region = region.narrow(dim, o, s)
            region.copy_(self._files.tensor(c.file, self._data_offset(name, c), c.sizes, out.dtype))

    def _data_offset(self, name: str, chunk: Chunk) -> int:
        """Where a stored chunk's first element is, checked to lie within the chunk's bytes: inside its small
        torch.save archive (from the archive's own record headers), or raw at the chunk's offset."""
        key = (chunk.file, chunk.offset)
        if key not in self._starts:
            self._starts[key] = self._find_data(name, chunk)
        return self._starts[key]

    def _find_data(self, name: str, chunk: Chunk) -> int:
        if chunk.transforms:
            raise CheckpointError(
                f"{self.path}: {name!r} is stored with transforms ({', '.join(chunk.transforms)}), "
                "which modscope cannot read yet"
            )
        dtype = self._entries[name].dtype
        nbytes = prod(chunk.sizes) * dtype.itemsize
        head = torch.zeros(4, dtype=torch.uint8)
        if chunk.length:
            self._files.read_into(chunk.file, chunk.offset, head[: min(4, chunk.length)])
        if bytes(head.tolist()) != ZIP_MAGIC:
            if chunk.length == nbytes:
                return chunk.offset
            raise CheckpointError(
                f"{self.path}: cannot decode the stored chunk of {name!r} ({chunk.length} bytes, neither a "
                f"torch.save archive nor the {nbytes} raw bytes its shape needs)"
            )
        label = f"{chunk.file} (at byte {chunk.offset})"
        with open(chunk.file, "rb") as f:
            window = _FileSlice(f, chunk.offset, chunk.length)
            t = load_pickled(window, label=label, trust=self._trust, map_location="meta")
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != chunk.sizes or t.dtype != dtype or not t.is_contiguous():
                raise CheckpointError(f"{self.path}: the stored chunk of {name!r} is not the tensor its metadata describes")
            start, size = _stored_record(window, getattr(t.untyped_storage(), "_checkpoint_offset", None), label)
        first = t.storage_offset() * t.element_size()
        if first + nbytes > min(size, t.untyped_storage().nbytes()):
            raise CheckpointError(f"{label}: the record of {name!r} holds {size} bytes, fewer than its chunk needs")
        return chunk.offset + start + first


def _stored_record(window: "_FileSlice", claimed, label: str) -> tuple[int, int]:
    """(data start within the archive, size) of the archive's storage record, read from its own zip headers:
    the one data record, or the one torch's offset points at. Compressed records are refused (their bytes
    are not the values)."""
    try:
        with zipfile.ZipFile(io.BufferedReader(window)) as archive:
            infos = [info for info in archive.infolist() if "/data/" in info.filename]
        records = []
        for info in infos:
            window.seek(info.header_offset)
            local = window.read(30)
            if len(local) < 30 or local[:4] != ZIP_MAGIC:
                raise CheckpointError(f"{label} is corrupt: a record header is missing")
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            records.append((info.header_offset + 30 + name_len + extra_len, info))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{label} is corrupt: {exc}") from None
    chosen = [r for r in records if len(records) == 1 or r[0] == claimed]
    if len(chosen) != 1:
        raise CheckpointError(f"{label}: cannot tell which record holds the chunk's values")
    start, info = chosen[0]
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise CheckpointError(f"{label}: the chunk's values are stored compressed, which modscope cannot read in place")
    if start + info.file_size > window.size:
        raise CheckpointError(f"{label} is truncated: its record reaches past the chunk's bytes")
    return start, info.file_size


class _FileSlice(io.RawIOBase):
    """A read-only window of an open file, seekable from 0 (for torch.load of an archive inside a file)."""

    def __init__(self, f, offset: int, length: int):
        self._f, self._offset, self._length, self._pos = f, offset, length, 0

    @property
    def size(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        target = {0: pos, 1: self._pos + pos, 2: self._length + pos}[whence]
        if target < 0:  # as a real file does; never a read before the window
            raise OSError(22, "Invalid argument")
        self._pos = target
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._length - self._pos))
        self._f.seek(self._offset + self._pos)
        got = self._f.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got
