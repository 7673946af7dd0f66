"""``torch.distributed.checkpoint`` (DCP) directories: a pickled ``.metadata`` plus ``*.distcp`` data files.

torch's own ``FileSystemReader.read_metadata`` is a plain ``pickle.load`` (it would run code from a hostile
file); here ``.metadata`` goes through an unpickler that only resolves DCP's own metadata classes. Each
stored chunk is a small ``torch.save`` archive (or raw bytes) at an offset of a data file; values are read
by file offset, chunk by chunk, like any other format.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from dataclasses import dataclass
from math import prod

import torch

from modscope.checkpoint import nested
from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta, file_size
from modscope.checkpoint.torchfile import ZIP_MAGIC, load_pickled, unsafe_message
from modscope.errors import CheckpointError, UnsafeLoadError

METADATA = ".metadata"

_DCP_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata", "BytesStorageMetadata",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "collections": {"OrderedDict"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
}  # fmt: skip


class _Refused(pickle.UnpicklingError):
    """The metadata names a global outside the allowed set."""


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only the classes DCP metadata is made of (and torch dtypes); anything else is refused."""

    def find_class(self, module: str, name: str):
        allowed = name in _DCP_CLASSES.get(module, ()) or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        )
        if not allowed:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def read_metadata(folder: str, *, trust: bool):
    path = os.path.join(folder, METADATA)
    if not torch.distributed.is_available():
        raise CheckpointError(f"{folder} is a torch.distributed.checkpoint folder, but this torch has no torch.distributed")
    importlib.import_module("torch.distributed.checkpoint.filesystem")  # classes the metadata refers to
    dcp_metadata = importlib.import_module("torch.distributed.checkpoint.metadata")

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}")
    if not raw:
        raise CheckpointError(f"{path} is empty")
    try:
        metadata = pickle.loads(raw) if trust else _MetadataUnpickler(io.BytesIO(raw)).load()
    except _Refused as exc:
        raise UnsafeLoadError(unsafe_message(path, f"such as {exc}"))
    except Exception as exc:  # truncated or garbled pickle
        raise CheckpointError(f"{path} is truncated or corrupt: {type(exc).__name__}: {exc}")
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise CheckpointError(f"{path} is not torch.distributed.checkpoint metadata")
    return metadata, dcp_metadata


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
        metadata, md = read_metadata(folder, trust=trust)
        storage = {(index.fqn, tuple(index.offset or ())): info for index, info in (metadata.storage_data or {}).items()}
        planner = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
        self._entries: dict[str, TensorMeta] = {}
        self._chunks: dict[str, list] = {}
        paths: dict[str, tuple] = {}
        needed: dict[str, int] = {}
        for fqn, item in metadata.state_dict_metadata.items():
            paths[fqn] = tuple(planner.get(fqn, (fqn,)))
            if not isinstance(item, md.TensorStorageMetadata):
                continue  # pickled non-tensor values (step counters, param groups)
            shape = tuple(int(d) for d in item.size)
            self._entries[fqn] = TensorMeta(shape, item.properties.dtype, storage=(folder, fqn))
            chunks = []
            for chunk in item.chunks:
                info = storage.get((fqn, tuple(chunk.offsets)))
                if info is None:
                    raise CheckpointError(f"{folder}: {METADATA} lists {fqn!r} but no data file holds it")
                file = os.path.join(folder, info.relative_path)
                needed[file] = max(needed.get(file, 0), info.offset + info.length)
                chunks.append((tuple(chunk.offsets), tuple(chunk.sizes), file, info))
            self._chunks[fqn] = chunks
        for file, end in needed.items():
            if not os.path.isfile(file):
                raise CheckpointError(f"{folder} is incomplete: data file {os.path.basename(file)} is missing")
            if file_size(file) < end:
                raise CheckpointError(f"{folder} is truncated: {os.path.basename(file)} is shorter than its metadata says")
        scalars = {n for n, m in self._entries.items() if not m.shape}
        self._root = nested.build(paths, set(self._entries), scalars)
        self._pieces: dict[str, list[_Piece] | None] = {}

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
            chunks = sorted(self._chunks[name])
            row = prod(meta.shape[1:]) if meta.shape else 1
            if all(sizes[1:] == meta.shape[1:] and not any(offsets[1:]) for offsets, sizes, _, _ in chunks):
                self._pieces[name] = [
                    _Piece(offsets[0] * row if offsets else 0, prod(sizes), file, self._data_offset(name, file, info, sizes))
                    for offsets, sizes, file, info in chunks
                ]
            else:
                self._pieces[name] = None
        return self._pieces[name]

    def _assemble(self, name: str, out: torch.Tensor) -> None:
        for offsets, sizes, file, info in self._chunks[name]:
            region = out
            for dim, (o, s) in enumerate(zip(offsets, sizes)):
                region = region.narrow(dim, o, s)
            chunk = self._files.tensor(file, self._data_offset(name, file, info, sizes), sizes, out.dtype)
            region.copy_(chunk)

    def _data_offset(self, name: str, file: str, info, sizes: tuple[int, ...]) -> int:
        """Where a stored chunk's first element is: inside its small torch.save archive, or raw at the offset."""
        if info.transform_descriptors:
            raise CheckpointError(
                f"{self.path}: {name!r} is stored with transforms ({', '.join(info.transform_descriptors)}), "
                "which modscope cannot read yet"
            )
        dtype = self._entries[name].dtype
        head = torch.empty(4, dtype=torch.uint8)
        self._files.read_into(file, info.offset, head[: min(4, info.length)])
        if bytes(head.tolist()) == ZIP_MAGIC:
            with open(file, "rb") as f:
                window = _FileSlice(f, info.offset, info.length)
                t = load_pickled(window, label=f"{file} (at byte {info.offset})", trust=self._trust, map_location="meta")
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(sizes) or not t.is_contiguous():
                raise CheckpointError(f"{self.path}: stored chunk of {name!r} is not the tensor its metadata describes")
            return info.offset + t.untyped_storage()._checkpoint_offset + t.storage_offset() * t.element_size()
        if info.length == prod(sizes) * dtype.itemsize:
            return info.offset
        raise CheckpointError(f"{self.path}: cannot decode the stored chunk of {name!r}")


class _FileSlice(io.RawIOBase):
    """A read-only window of an open file, seekable from 0 (for torch.load of an archive inside a file)."""

    def __init__(self, f, offset: int, length: int):
        self._f, self._offset, self._length, self._pos = f, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = {0: pos, 1: self._pos + pos, 2: self._length + pos}[whence]
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._length - self._pos))
        self._f.seek(self._offset + self._pos)
        got = self._f.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got
