"""Tensors read from the records of a zip archive (``torch.save`` files, TorchScript), checked before any read.

Each tensor names its storage's record and its view into it (dtype, shape, strides, element offset). Before
anything is read: the record exists, the storage's declared size fits inside it, the view fits inside the
storage. Stored records are mapped in place; deflated ones are inflated (one at a time); big-endian archives
(a ``byteorder`` record of ``big``) are byte-swapped on read and never viewed raw.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta
from modscope.checkpoint.ziparchive import ZipArchive, printable
from modscope.errors import CheckpointError


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's elements are: ``record`` holds its storage of ``storage_nbytes`` declared bytes."""

    record: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # in elements
    storage_nbytes: int

    @property
    def contiguous(self) -> bool:
        expected, ok = 1, True
        for size, stride in reversed(list(zip(self.shape, self.stride))):
            if size != 1 and stride != expected:
                ok = False
            expected *= size
        return ok

    def extent(self) -> int:
        """Elements of the storage the view reaches, from its offset (0 for an empty tensor)."""
        if any(size == 0 for size in self.shape):
            return 0
        return self.offset + 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.stride))


def byteorder(archive: ZipArchive, root: str) -> str:
    """``little`` or ``big``: what the archive's ``byteorder`` record says (little when absent, as torch reads it)."""
    name = root + "byteorder"
    if name not in archive.records:
        return "little"
    value = archive.read_bytes(name, limit=16, what="byteorder record")
    if value not in (b"little", b"big"):
        raise CheckpointError(f"{archive.path}: its byteorder record says {value[:16]!r}, neither 'little' nor 'big'")
    return value.decode()


class ArchiveReader(CheckpointReader):
    """A reader over ``StoredTensor``s in one zip archive (the archive is the caller's, closed with the reader)."""

    def __init__(
        self, archive: ZipArchive, tensors: dict[str, StoredTensor], *, order: str, fmt: str, in_memory=None,
        containers=None, metadata=None,
    ):  # fmt: skip
        super().__init__(archive.path)
        self.format = fmt
        self._containers, self._metadata = containers, metadata
        self._archive = archive
        self._tensors = tensors
        self._swap = order != "little"
        self._memory: dict[str, torch.Tensor] = dict(in_memory or {})  # tensors the pickle itself holds
        self._files = FileSpans()
        self._inflated: tuple[str, torch.Tensor] | None = None
        self._entries: dict[str, TensorMeta] = {}
        for name, t in tensors.items():
            self._check(name, t)
            self._entries[name] = TensorMeta(
                t.shape, t.dtype, storage=(archive.path, t.record), offset=t.offset * t.dtype.itemsize
            )
        for name, t in self._memory.items():
            self._entries[name] = TensorMeta(tuple(t.shape), t.dtype, storage=None)
        archive.close()  # reopened only if a deflated or byte-swapped record is read

    def _check(self, name: str, t: StoredTensor) -> None:
        path, name = self.path, printable(name)
        record = self._archive.records.get(t.record)
        if record is None:
            raise CheckpointError(f"{path} is corrupt: tensor {name} needs zip record {printable(t.record)}, which is missing")
        if t.storage_nbytes > record.size:
            raise CheckpointError(
                f"{path} is corrupt: tensor {name}'s storage declares {t.storage_nbytes} bytes but its record "
                f"{printable(t.record)} holds {record.size}"
            )
        if t.offset < 0 or any(s < 0 for s in t.shape) or any(s < 0 for s in t.stride) or len(t.shape) != len(t.stride):
            raise CheckpointError(f"{path} is corrupt: tensor {name} has a negative or malformed shape, stride or offset")
        if t.extent() * t.dtype.itemsize > t.storage_nbytes:
            raise CheckpointError(
                f"{path} is corrupt: tensor {name} (shape {list(t.shape)}, offset {t.offset}) reaches past its "
                f"{t.storage_nbytes}-byte storage"
            )

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def containers(self):
        return self._containers

    def metadata(self):
        return self._metadata

    def _mappable(self, t: StoredTensor) -> bool:
        return self._archive.records[t.record].stored and not self._swap

    def read(self, name: str) -> torch.Tensor:
        if name in self._memory:
            return self._memory[name].detach()
        t = self._tensors[name]
        record = self._archive.records[t.record]
        size = t.dtype.itemsize
        if self._mappable(t) and t.contiguous:
            return self._files.tensor(self.path, record.data_offset + t.offset * size, t.shape, t.dtype)
        span = t.extent()
        if self._mappable(t):
            whole = self._files.tensor(self.path, record.data_offset, (span,), t.dtype)
        else:
            whole = self._storage(t)[: span * size].view(t.dtype) if span else torch.empty(0, dtype=t.dtype)
            if self._swap:
                whole = _swapped(whole)
        if not span:
            return torch.empty(t.shape, dtype=t.dtype)
        return whole.as_strided(t.shape, t.stride, whole.storage_offset() + t.offset)

    def _storage(self, t: StoredTensor) -> torch.Tensor:
        """The record's bytes as a uint8 tensor: a copy read (and inflated) from the file; the last one is kept."""
        if self._inflated is None or self._inflated[0] != t.record:
            data = bytearray(self._archive.read_bytes(t.record))
            self._inflated = (t.record, torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8))
        return self._inflated[1]

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        t = self._tensors.get(name)
        if t is not None and self._mappable(t) and t.contiguous:
            offset = self._archive.records[t.record].data_offset + (t.offset + start) * out.element_size()
            self._files.read_into(self.path, offset, out)
        else:
            super().read_into(name, start, out)

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        t = self._tensors.get(name)
        if t is None or not (self._mappable(t) and t.contiguous):
            return None
        return self.path, self._archive.records[t.record].data_offset + (t.offset + start) * t.dtype.itemsize

    def close(self) -> None:
        super().close()
        self._inflated = None
        self._files.close()
        self._archive.close()


def _swapped(values: torch.Tensor) -> torch.Tensor:
    """Big-endian elements in native (little-endian) order; complex numbers swap each half."""
    width = values.element_size() // (2 if values.is_complex() else 1)
    if width == 1 or values.numel() == 0:
        return values.clone()
    flat = values.reshape(-1).view(torch.uint8).view(-1, width).flip(1).contiguous()
    return flat.view(-1).view(values.dtype)
