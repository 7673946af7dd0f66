"""How a torch.distributed.checkpoint folder stores its tensors: chunks per tensor, bytes per data file.

Part of ``modscope summary CKPT`` / ``tree CKPT`` for DCP folders (``CheckpointSummary.layout``); plain
data, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChunkInfo:
    """One saved piece of a tensor: where it sits in the global tensor and in which file."""

    offsets: tuple[int, ...]  # first element of the chunk in the global tensor, per dim
    sizes: tuple[int, ...]
    file: str  # data file, relative to the checkpoint folder
    file_offset: int  # bytes into the file
    length: int  # stored bytes (a small torch.save archive per chunk, or raw bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offsets": list(self.offsets),
            "sizes": list(self.sizes),
            "file": self.file,
            "file_offset": self.file_offset,
            "length": self.length,
        }


@dataclass(frozen=True)
class TensorLayout:
    """``split``: distinct chunk offsets per dim, (2, 1) = two row blocks, (1, 1) = saved whole.
    ``covered``: the chunks tile the whole tensor (False: the checkpoint lacks part of it)."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[ChunkInfo, ...]
    split: tuple[int, ...]
    covered: bool = True

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.file for c in self.chunks))

    @property
    def description(self) -> str:
        """'whole', '2 chunks along dim 0', '4 chunks: dim 0 x2, dim 1 x2'."""
        count = len(self.chunks)
        if count <= 1:
            return "whole" if self.chunks else "no chunks"
        split = [(d, n) for d, n in enumerate(self.split) if n > 1]
        if len(split) == 1 and split[0][1] == count:
            return f"{count} chunks along dim {split[0][0]}"
        dims = ", ".join(f"dim {d} x{n}" for d, n in split)
        return f"{count} chunks: {dims}" if dims else f"{count} chunks"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": list(self.split),
            "covered": self.covered,
            "files": list(self.files),
            "chunks": [c.to_dict() for c in self.chunks],
        }


@dataclass(frozen=True)
class DcpFile:
    name: str
    size: int | None  # bytes on disk (None: unreadable)
    stored_bytes: int  # bytes of tensor chunks the metadata places in it
    chunks: int
    tensors: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "stored_bytes": self.stored_bytes,
            "chunks": self.chunks,
            "tensors": self.tensors,
        }


@dataclass(frozen=True)
class DcpLayout:
    files: tuple[DcpFile, ...]
    tensors: tuple[TensorLayout, ...]
    non_tensor: tuple[str, ...] = ()  # entries saved as pickled bytes (not tensors): names only

    def of(self, name: str) -> TensorLayout | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    @property
    def uncovered(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors if not t.covered)

    def split_counts(self) -> dict[str, int]:
        """description -> number of tensors, most common first."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.description] = counts.get(t.description, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "tensors": [t.to_dict() for t in self.tensors],
            "non_tensor": list(self.non_tensor),
            "uncovered": list(self.uncovered),
        }
