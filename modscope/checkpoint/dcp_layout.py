"""How a torch.distributed.checkpoint folder lays its tensors out: chunks, files, and row-wise reads.

``dcp_layout`` describes, from ``.metadata`` alone, how every tensor is cut into chunks (one per shard
that was saved: ``Shard(0)`` over 8 ranks gives 8 chunks along dim 0) and which data file holds each;
per file, how many bytes and chunks it holds. It also checks that each tensor's chunks cover it exactly.

``read_rows_into`` reads a flat range of a tensor whose chunks are not plain row blocks (split along a
later dimension: tensor-parallel ``Shard(1)``, 2-D ``(Shard(0), Shard(1))``): only the rows that range
touches are assembled, chunk by chunk, so a value diff stays within a few buffers however large the
tensor (rather than assembling the whole tensor first).
"""
from __future__ import annotations

import os
from collections import defaultdict
from math import prod

import torch

from modscope.reports.dcp_layout import ChunkInfo, DcpFile, DcpLayout, TensorLayout


def dcp_layout(ckpt) -> DcpLayout | None:
    """The layout of a DCP ``Checkpoint`` (names relative to its chosen key); None for other formats."""
    reader = ckpt.reader
    chunks_of = getattr(reader, "_chunks", None)
    if ckpt.format != "dcp" or chunks_of is None:
        return None
    folder = reader.path
    real_folder = os.path.realpath(folder)
    full_names = getattr(ckpt, "_full", None) or {n: n for n in ckpt.entries()}
    entries = ckpt.entries()
    tensors: list[TensorLayout] = []
    file_bytes: dict[str, int] = defaultdict(int)
    file_chunks: dict[str, int] = defaultdict(int)
    file_tensors: dict[str, set[str]] = defaultdict(set)
    for local, full in full_names.items():
        meta = entries[local]
        chunks = []
        for c in sorted(chunks_of.get(full, ()), key=lambda c: c.offsets):
            rel = os.path.relpath(c.file, real_folder)  # inside the folder: checked when the metadata was read
            chunks.append(ChunkInfo(c.offsets, c.sizes, rel, c.offset, c.length))
            file_bytes[rel] += c.length
            file_chunks[rel] += 1
            file_tensors[rel].add(local)
        tensors.append(
            TensorLayout(
                name=local,
                shape=tuple(meta.shape),
                chunks=tuple(chunks),
                split=_split(meta.shape, chunks),
                covered=_covers(meta.shape, chunks),
            )
        )
    files = tuple(
        DcpFile(name, _size(os.path.join(real_folder, name)), file_bytes[name], file_chunks[name], len(file_tensors[name]))
        for name in sorted(file_bytes, key=_natural)
    )
    return DcpLayout(files=files, tensors=tuple(tensors), non_tensor=tuple(reader.others))


def _split(shape: tuple[int, ...], chunks: list[ChunkInfo]) -> tuple[int, ...]:
    """Distinct chunk offsets per dimension: (2, 1) = two row blocks; (1, 4) = four column blocks."""
    if not shape:
        return ()
    return tuple(len({c.offsets[d] for c in chunks}) if chunks else 0 for d in range(len(shape)))


def _covers(shape: tuple[int, ...], chunks: list[ChunkInfo]) -> bool:
    """Chunks inside the tensor whose volumes add up to it (DCP chunks never overlap)."""
    inside = all(all(o + s <= n for o, s, n in zip(c.offsets, c.sizes, shape)) for c in chunks)
    return inside and sum(prod(c.sizes) for c in chunks) == prod(shape)


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _natural(name: str):
    """__10_0.distcp after __9_0.distcp."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# --- bounded-memory reads of column-split tensors ----------------------------------------------------------


def read_rows_into(reader, name: str, start: int, out: torch.Tensor) -> None:
    """Fill 1-D ``out`` with elements ``start ..`` of ``name`` (row-major), assembling only the rows touched.

    Memory: the touched rows (about ``out``'s size plus two rows) and one chunk's share of them at a time.
    """
    meta = reader.entries()[name]
    shape = tuple(meta.shape)
    count = out.numel()
    if count == 0:
        return
    row = prod(shape[1:]) if len(shape) > 1 else 1
    first, last = start // row, -(-(start + count) // row)
    block = torch.empty((last - first, *shape[1:]), dtype=out.dtype)
    itemsize = block.element_size()
    for chunk in reader._chunks[name]:
        offsets, sizes = chunk.offsets, chunk.sizes
        lo, hi = max(first, offsets[0]), min(last, offsets[0] + sizes[0])
        if lo >= hi:
            continue
        chunk_row = prod(sizes[1:]) if len(sizes) > 1 else 1
        rows = torch.empty((hi - lo, *sizes[1:]), dtype=out.dtype)
        base = reader._data_offset(name, chunk)  # cached by the reader
        reader._files.read_into(chunk.file, base + (lo - offsets[0]) * chunk_row * itemsize, rows)
        region = block.narrow(0, lo - first, hi - lo)
        for dim in range(1, len(shape)):
            region = region.narrow(dim, offsets[dim], sizes[dim])
        region.copy_(rows)
    skip = start - first * row
    out.copy_(block.reshape(-1)[skip : skip + count])
