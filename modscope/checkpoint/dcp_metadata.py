"""A torch.distributed.checkpoint folder's ``.metadata``, unpickled safely and checked into plain data.

torch's own ``FileSystemReader.read_metadata`` is a plain ``pickle.load`` (it would run code from a hostile
file); here only DCP's own metadata classes resolve. The unpickled objects can still hold anything, so
``check`` turns them into plain, validated values: dtypes, shapes and chunk boxes that cover each tensor
exactly, data files that resolve inside the folder, and byte ranges inside those files.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from dataclasses import dataclass
from math import prod

import torch

from modscope.checkpoint.guard import contained, read_bytes, regular_file
from modscope.checkpoint.torchfile import unsafe_message
from modscope.errors import CheckpointError, UnsafeLoadError

METADATA = ".metadata"
#: DCP metadata of the largest models is tens of MB; anything past this is refused before unpickling
MAX_METADATA = 1 << 30
#: a tensor cut into more chunks than this is checked for overlaps by a grid test only
_PAIRWISE_CHUNKS = 256

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
    """The unpickled ``.metadata`` object and torch's DCP metadata module (its classes)."""
    path = os.path.join(folder, METADATA)
    if not torch.distributed.is_available():
        raise CheckpointError(f"{folder} is a torch.distributed.checkpoint folder, but this torch has no torch.distributed")
    importlib.import_module("torch.distributed.checkpoint.filesystem")  # classes the metadata refers to
    dcp_metadata = importlib.import_module("torch.distributed.checkpoint.metadata")
    raw = read_bytes(path, limit=MAX_METADATA, what="torch.distributed.checkpoint metadata file")
    if not raw:
        raise CheckpointError(f"{path} is empty")
    try:
        metadata = pickle.loads(raw) if trust else _MetadataUnpickler(io.BytesIO(raw)).load()
    except _Refused as exc:
        raise UnsafeLoadError(unsafe_message(path, f"such as {exc}")) from None
    except Exception as exc:  # truncated or garbled pickle
        raise CheckpointError(f"{path} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise CheckpointError(f"{path} is not torch.distributed.checkpoint metadata")
    return metadata, dcp_metadata


@dataclass(frozen=True)
class Chunk:
    """One stored box of a tensor: where it sits in the tensor, and which bytes of which file hold it."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str  # resolved path inside the folder
    offset: int  # byte range of the stored item in ``file``
    length: int
    transforms: tuple[str, ...]


@dataclass(frozen=True)
class Checked:
    """Everything the reader needs from ``.metadata``, validated."""

    tensors: dict[str, tuple[tuple[int, ...], torch.dtype, list[Chunk]]]  # fqn -> shape, dtype, chunks
    paths: dict[str, tuple]  # fqn -> dict keys it was saved under (every entry, tensors or not)
    others: tuple[str, ...]  # entries saved as pickled bytes


def check(metadata, md, folder: str) -> Checked:
    """Validate what ``read_metadata`` returned; any wrong type or number is one CheckpointError line."""
    where = f"{os.path.join(folder, METADATA)} is malformed"
    items = getattr(metadata, "state_dict_metadata", None)
    if not isinstance(items, dict):
        raise CheckpointError(f"{where}: state_dict_metadata is not a dict")
    storage = _storage(metadata, md, folder, where)
    planner = metadata.planner_data if isinstance(getattr(metadata, "planner_data", None), dict) else {}
    tensors: dict = {}
    paths: dict[str, tuple] = {}
    others = []
    sizes: dict[str, int] = {}
    for fqn, item in items.items():
        if not isinstance(fqn, str):
            raise CheckpointError(f"{where}: an entry name is a {type(fqn).__name__}, not a string")
        path = planner.get(fqn, (fqn,))
        if not isinstance(path, (tuple, list)) or not path or not all(isinstance(k, (str, int)) for k in path):
            raise CheckpointError(f"{where}: the planner data of {fqn!r} is not a path of keys")
        paths[fqn] = tuple(path)
        if isinstance(item, md.BytesStorageMetadata):
            others.append(fqn)
            continue
        if not isinstance(item, md.TensorStorageMetadata):
            raise CheckpointError(f"{where}: {fqn!r} is a {type(item).__name__}, not tensor or bytes metadata")
        dtype = getattr(getattr(item, "properties", None), "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{where}: {fqn!r} has no valid dtype")
        shape = _ints(getattr(item, "size", None), f"{where}: {fqn!r} has size", None)
        chunks = []
        raw_chunks = getattr(item, "chunks", None)
        if not isinstance(raw_chunks, (list, tuple)):
            raise CheckpointError(f"{where}: the chunks of {fqn!r} are not a list")
        for raw in raw_chunks:
            offsets = _ints(getattr(raw, "offsets", None), f"{where}: a chunk of {fqn!r} has offsets", len(shape))
            box = _ints(getattr(raw, "sizes", None), f"{where}: a chunk of {fqn!r} has sizes", len(shape))
            if any(o + s > n for o, s, n in zip(offsets, box, shape)):
                raise CheckpointError(f"{where}: a chunk of {fqn!r} at {list(offsets)} reaches past its shape {list(shape)}")
            info = storage.get((fqn, offsets))
            if info is None:
                raise CheckpointError(f"{folder}: {METADATA} lists {fqn!r} but no data file holds it")
            file, offset, length, transforms = info
            if file not in sizes:
                if not os.path.lexists(file):
                    raise CheckpointError(f"{folder} is incomplete: data file {os.path.basename(file)} is missing")
                sizes[file] = regular_file(file).st_size
            end = sizes[file]
            if offset + length > end:
                raise CheckpointError(
                    f"{folder} is truncated: {os.path.basename(file)} has {end} bytes, but a chunk of {fqn!r} "
                    f"is said to lie at bytes {offset}..{offset + length}"
                )
            chunks.append(Chunk(offsets, box, file, offset, length, transforms))
        _check_cover(fqn, shape, chunks, where)
        tensors[fqn] = (shape, dtype, chunks)
    return Checked(tensors, paths, tuple(others))


def _storage(metadata, md, folder: str, where: str) -> dict:
    """(fqn, chunk offsets) -> (file inside the folder, offset, length, transforms)."""
    data = getattr(metadata, "storage_data", None)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: storage_data is not a dict")
    out = {}
    resolved: dict[str, str] = {}
    for index, info in data.items():
        fqn = getattr(index, "fqn", None)
        if not isinstance(index, md.MetadataIndex) or not isinstance(fqn, str):
            raise CheckpointError(f"{where}: a storage_data key is not a MetadataIndex")
        offsets = _ints(getattr(index, "offset", None) or (), f"{where}: the storage of {fqn!r} has offsets", None)
        rel = getattr(info, "relative_path", None)
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not isinstance(rel, str) or not all(type(x) is int and x >= 0 for x in (offset, length)):
            raise CheckpointError(f"{where}: the storage of {fqn!r} is not a file with a non-negative offset and length")
        transforms = getattr(info, "transform_descriptors", None) or ()
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, str) for t in transforms):
            raise CheckpointError(f"{where}: the storage of {fqn!r} has malformed transform descriptors")
        if rel not in resolved:
            resolved[rel] = contained(folder, rel, f"{os.path.join(folder, METADATA)} (for {fqn!r})")
        out[(fqn, offsets)] = (resolved[rel], offset, length, tuple(transforms))
    return out


def _ints(value, what: str, ndim: int | None) -> tuple[int, ...]:
    """A tuple of non-negative ints (of ``ndim`` of them when given), or one clear error."""
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise CheckpointError(f"{what} {_short(value)}, not a list of non-negative integers")
    if ndim is not None and len(value) != ndim:
        raise CheckpointError(f"{what} {_short(value)}, not one per dimension ({ndim})")
    return tuple(value)


def _check_cover(fqn: str, shape: tuple[int, ...], chunks: list[Chunk], where: str) -> None:
    """Chunks must tile the tensor exactly: volumes adding up to it and no two overlapping (else parts of
    the tensor would be read twice, and others never)."""
    if sum(prod(c.sizes) for c in chunks) != prod(shape):
        raise CheckpointError(f"{where}: the chunks of {fqn!r} do not add up to its shape {list(shape)}")
    boxes = [c for c in chunks if prod(c.sizes)]
    if len(boxes) < 2 or _is_grid(boxes):
        return
    if len(boxes) > _PAIRWISE_CHUNKS:
        raise CheckpointError(f"{where}: the {len(boxes)} chunks of {fqn!r} do not form a grid modscope can check")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if all(ao < bo + bs and bo < ao + as_ for ao, as_, bo, bs in zip(a.offsets, a.sizes, b.offsets, b.sizes)):
                raise CheckpointError(f"{where}: chunks of {fqn!r} at {list(a.offsets)} and {list(b.offsets)} overlap")


def _is_grid(boxes: list[Chunk]) -> bool:
    """Distinct boxes that are cells of one grid of per-dimension cuts (how DCP shards tensors)."""
    cells = set()
    for dim in range(len(boxes[0].offsets)):
        cuts = {c.offsets[dim] for c in boxes} | {c.offsets[dim] + c.sizes[dim] for c in boxes}
        spans = sorted(cuts)
        step = {lo: hi for lo, hi in zip(spans, spans[1:])}
        if any(step.get(c.offsets[dim]) != c.offsets[dim] + c.sizes[dim] for c in boxes):
            return False
    for c in boxes:
        cells.add(c.offsets)
    return len(cells) == len(boxes)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
