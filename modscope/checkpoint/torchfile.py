"""Files written by ``torch.save``: zip archives (.pt/.pth/.bin/.ckpt) and the legacy non-zip format.

A zip archive's records are read and checked by ``ziparchive``; its ``data.pkl`` is unpickled by torch's
``weights_only`` unpickler (a plain one only with ``trust``) onto ``meta`` storages, each tied to its
``data/<key>`` record, whose declared size must fit inside the record. Values are read from the records
later (``records.ArchiveReader``). Legacy files cannot be mapped: their layout is checked against the file
(``legacy.check_layout``) and they are read whole.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from modscope.checkpoint import nested
from modscope.checkpoint.base import CheckpointReader
from modscope.checkpoint.memory import TensorDictReader
from modscope.checkpoint.module import state_tensors
from modscope.checkpoint.records import ArchiveReader, StoredTensor, byteorder
from modscope.checkpoint.ziparchive import ZipArchive, printable
from modscope.errors import CheckpointError, ModscopeError, UnsafeLoadError

ZIP_MAGIC = b"PK\x03\x04"

#: the largest data.pkl modscope unpickles (a state dict of 100,000 tensors pickles to about 10 MB)
MAX_PICKLE_BYTES = 64 << 20


def unsafe_message(path: str, detail: str = "") -> str:
    what = f" ({detail})" if detail else ""
    return (
        f"{path} holds pickled Python objects beyond tensors and plain containers{what}; reading it would run "
        "code from the file. Pass --trust only if you trust its source"
    )


def load_pickled(source, *, trust: bool, label: str | None = None, **kwargs) -> Any:
    """``torch.load`` with ``weights_only`` unless ``trust``; every failure becomes one CheckpointError line."""
    path = label or str(source)
    with unpickling_errors(path, trust):
        return torch.load(source, weights_only=not trust, **kwargs)


@contextlib.contextmanager
def unpickling_errors(path: str, trust: bool):
    """Turn what unpickling a damaged or hostile file raises into one UnsafeLoadError/CheckpointError line."""
    try:
        yield
    except ModscopeError:
        raise
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if not trust and ("Weights only load failed" in text or "Unsupported global" in text):
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            raise UnsafeLoadError(unsafe_message(path, f"such as {found.group(1)}" if found else "")) from None
        raise CheckpointError(f"{path} is corrupt: cannot unpickle it ({_first_line(text)})") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:  # a damaged file makes torch's readers fail in many ways
        text = _first_line(str(exc))
        raise CheckpointError(f"{path} is truncated or corrupt: {type(exc).__name__}{': ' + text if text else ''}") from None


def _first_line(text: str) -> str:
    """The first sentence of the first line (torch's messages go on to paragraphs of advice)."""
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line.split(". ", 1)[0].rstrip(".")


def flatten(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], nested.Node, dict[str, Any]]:
    """Tensors reachable through string-keyed dicts, by dotted name; the dict tree; state_dict ``_metadata``."""
    if isinstance(obj, nn.Module):
        obj = state_tensors(obj)
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{path} holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, Any] = {}
    root = nested.Node()
    stack: list[tuple[str, Mapping, nested.Node]] = [("", obj, root)]
    while stack:
        prefix, mapping, node = stack.pop()
        for module_name, info in (getattr(mapping, "_metadata", None) or {}).items():
            metadata[_join(prefix, module_name)] = info
        for key, value in mapping.items():
            if not isinstance(key, str):
                continue
            name = _join(prefix, key)
            node.keys.add(key)
            if isinstance(value, nn.Module):
                value = state_tensors(value)
            if isinstance(value, torch.Tensor):
                tensors[name] = value
                node.tensors.append(name)
                node.scalars += value.dim() == 0
            elif isinstance(value, Mapping):
                stack.append((name, value, node.child(key)))
    return tensors, root, metadata


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else (prefix or key)


def open_torch_zip(path: str, *, trust: bool) -> CheckpointReader:
    """A ``torch.save`` zip archive: tensors described from its pickle, values read from its records."""
    archive = ZipArchive(path)
    try:
        root = archive.root()
        order = byteorder(archive, root)
        data = archive.read_bytes(root + "data.pkl", limit=MAX_PICKLE_BYTES, what="pickle")
        with unpickling_errors(path, trust):
            obj = _unpickle(data, archive, root, trust)
        tensors, containers, metadata = flatten(obj, path)
        stored, in_memory = _stored(tensors, path)
        _check_declared_views(stored, _declared_views(data, path, root, trust), path)
        return ArchiveReader(
            archive, stored, order=order, fmt="torch", in_memory=in_memory, containers=containers, metadata=metadata
        )
    except BaseException:
        archive.close()
        raise


def _unpickle(data: bytes, archive: ZipArchive, root: str, trust: bool) -> Any:
    """``data.pkl`` onto meta storages, each marked with its record; declared sizes checked against records."""
    storages: dict[str, torch.UntypedStorage] = {}

    def persistent_load(pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"{archive.path} is corrupt: unknown persistent id in its pickle ({str(pid)[:60]})")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        shown = printable(key, 40)
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{archive.path} is corrupt: storage {shown} has an unknown type or size")
        name = f"{root}data/{key}"
        record = archive.records.get(name)
        if record is None:
            raise CheckpointError(f"{archive.path} is corrupt: its pickle names storage {shown}, but the record {printable(name)} is missing")
        nbytes = numel * dtype.itemsize
        if nbytes > record.size:
            raise CheckpointError(
                f"{archive.path} is corrupt: storage {shown} declares {numel} elements ({nbytes} bytes) but its "
                f"record holds {record.size} bytes"
            )
        storage = storages.get(key)
        if storage is None:
            storage = storages[key] = torch.UntypedStorage(nbytes, device="meta")
            storage._modscope_record = name
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)

    if trust:
        unpickler = _TrustedUnpickler(io.BytesIO(data), encoding="utf-8")
    else:
        from torch._weights_only_unpickler import Unpickler

        unpickler = Unpickler(io.BytesIO(data), encoding="utf-8")
    unpickler.persistent_load = persistent_load
    return unpickler.load()


class _TrustedUnpickler(pickle.Unpickler):
    """What ``torch.load(weights_only=False)`` unpickles with (runs the file's code: only with ``trust``)."""

    def find_class(self, module, name):
        if isinstance(name, str) and "Storage" in name:
            with contextlib.suppress(KeyError):
                return torch.serialization.StorageType(name)
        return super().find_class("torch._tensor" if module == "torch.tensor" else module, name)


def _stored(tensors: dict[str, torch.Tensor], path: str) -> tuple[dict[str, StoredTensor], dict[str, torch.Tensor]]:
    """Each meta tensor's record and view; tensors the pickle holds by value (not in a record) kept aside."""
    stored: dict[str, StoredTensor] = {}
    in_memory: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if t.layout != torch.strided or t.is_quantized or t.is_conj() or t.is_neg():
            raise CheckpointError(f"{path}: tensor {printable(name)} is {t.layout}/quantized/conjugated; modscope reads plain dense tensors only")
        if not t.is_meta:
            in_memory[name] = t
            continue
        storage = t.untyped_storage()
        record = getattr(storage, "_modscope_record", None)
        if record is None:
            raise CheckpointError(f"{path}: tensor {printable(name)} has no stored data (was it saved from the meta device?)")
        stored[name] = StoredTensor(
            record, t.dtype, tuple(t.shape), tuple(t.stride()), t.storage_offset(), storage.nbytes()
        )
    return stored, in_memory


def _declared_views(data: bytes, path: str, root: str, trust: bool) -> set[tuple] | None:
    """(record, element offset, shape, strides) of every tensor ``data.pkl`` declares, read by the inert unpickler
    (runs nothing): torch's meta rebuild silently makes some invalid views (negative strides) contiguous."""
    from modscope.checkpoint.inert import InertUnpickler

    unpickler = InertUnpickler(io.BytesIO(data), where=path)
    try:
        with unpickling_errors(path, False):
            unpickler.load()
    except ModscopeError:
        if trust:  # a trusted pickle may build what the inert reader cannot follow; torch built it already
            return None
        raise
    return {(f"{root}data/{t.storage.key}", t.offset, t.shape, t.stride) for t in unpickler.tensors}


def _check_declared_views(stored: dict[str, StoredTensor], declared: set[tuple] | None, path: str) -> None:
    if declared is None:
        return
    for name, t in stored.items():
        if (t.record, t.offset, t.shape, t.stride) not in declared:
            raise CheckpointError(
                f"{path} is corrupt: tensor {printable(name)} declares a view of its storage that torch cannot "
                "represent (negative or malformed strides, size or offset)"
            )


def open_torch_legacy(path: str, *, trust: bool) -> CheckpointReader:
    """The pre-1.6 format cannot be memory-mapped: its layout is checked, then its tensors are read into memory."""
    from modscope.checkpoint.legacy import check_layout

    check_layout(path)
    obj = load_pickled(path, trust=trust, map_location="cpu")
    tensors, root, metadata = flatten(obj, path)
    return TensorDictReader(path, tensors, fmt="torch-legacy", containers=root, metadata=metadata)
