"""Describe the values a module receives and returns as small plain structures (shapes, never data).

``describe`` walks tensors, tuples/lists, dicts, dataclasses and namedtuples; big containers and deep nesting
are cut short so a module returning 10,000 tensors cannot slow the pass down or bloat the report.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterator

import torch

from modscope.collect.static.tensors import dtype_name
from modscope.core import nest
from modscope.reports.forward import Opaque, Record, TensorMeta

MAX_ITEMS = 32
MAX_DEPTH = 6
_MAX_REPR = 40
_SHOWN = (bool, int, float, type(None))
_REPRESENTED = (str, bytes, complex, slice, torch.dtype, torch.device, torch.memory_format, enum.Enum)
map_tensors = nest.map_tensors  # containers keep their types (meta.py's real_inputs/meta_outputs use it from here)
_DTYPE_NAMES = {dtype: dtype_name(dtype) for dtype in vars(torch).values() if isinstance(dtype, torch.dtype)}


def describe(value: Any, depth: int = 0):
    """A tensor -> TensorMeta; containers -> tuples/dicts/Records of descriptions; scalars kept; else Opaque."""
    if isinstance(value, torch.Tensor):
        return TensorMeta(tuple(value.shape), _DTYPE_NAMES.get(value.dtype) or dtype_name(value.dtype))
    if isinstance(value, _SHOWN):
        return value
    if isinstance(value, str) and len(value) <= _MAX_REPR:
        return value
    if depth >= MAX_DEPTH:
        return Opaque(type(value).__name__, "…")
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return Record(type(value).__name__, _describe_items(zip(value._fields, value), depth))
    if isinstance(value, (tuple, list)):
        items = tuple(describe(v, depth + 1) for v in value[:MAX_ITEMS])
        return items + ((Opaque("…", f"{len(value) - MAX_ITEMS} more"),) if len(value) > MAX_ITEMS else ())
    if isinstance(value, dict):
        fields = _describe_items(value.items(), depth)
        return fields if type(value) is dict else Record(type(value).__name__, fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value))
        return Record(type(value).__name__, _describe_items(pairs, depth))
    if isinstance(value, _REPRESENTED):
        text = repr(value)
        return Opaque(type(value).__name__, text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 1] + "…")
    return Opaque(type(value).__name__)


def _describe_items(pairs: Iterator[tuple[Any, Any]], depth: int) -> dict:
    out = {}
    for i, (key, item) in enumerate(pairs):
        if i == MAX_ITEMS:
            out["…"] = Opaque("…", "more items")
            break
        out[str(key)] = describe(item, depth + 1)
    return out


def iter_tensors(value: Any, depth: int = 0, *, limit: int | None = MAX_ITEMS) -> Iterator[torch.Tensor]:
    """Every tensor inside ``value``: nested tuples/lists/dicts/dataclasses, ``limit`` items per container
    (``describe``'s limit by default; None for all, when every tensor matters, e.g. to draw every edge)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth >= MAX_DEPTH or isinstance(value, (str, bytes)):
        return
    elif isinstance(value, (tuple, list)):
        for item in value[:limit]:
            yield from iter_tensors(item, depth + 1, limit=limit)
    elif isinstance(value, dict):
        for i, item in enumerate(value.values()):
            if i == limit:
                break
            yield from iter_tensors(item, depth + 1, limit=limit)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from iter_tensors(getattr(value, f.name, None), depth + 1, limit=limit)


def storage_key(tensor: torch.Tensor):
    """Identity of the memory behind ``tensor``: views and in-place results share a key.

    Meta tensors have no addresses, so their key is their storage object's (callers keep the tensor alive, so
    the address is not reused): views, ``detach()`` and ``.data`` share it, as they share memory on CPU.
    """
    base = tensor._base if tensor._base is not None else tensor
    if tensor.is_meta:
        try:
            return ("meta", tensor.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError):
            return ("meta", id(base))
    try:
        return (tensor.device, tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # wrapper subclasses, sparse, ...
        return ("obj", id(base))


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the whole storage behind ``tensor`` (what keeping it alive costs)."""
    base = tensor._base if tensor._base is not None else tensor
    try:
        return base.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return base.numel() * base.element_size()

