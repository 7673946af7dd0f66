"""Tensors inside nested values, replaced while every container keeps its own type.

A model's inputs must reach it exactly as given: a namedtuple stays that namedtuple (``point.x`` works), an
``OrderedDict`` stays ordered and of its type, a ``PackedSequence`` stays one ``PackedSequence`` (its
``batch_sizes`` on the CPU, as ``nn.LSTM`` requires), a dataclass stays that dataclass. A container holding
no tensor that changed is returned as it is (same object), so unknown types pass through untouched.

>>> map_tensors(Point(x, y), lambda t: t.to("cuda"))   # Point(x=tensor(..., device='cuda'), y=...)
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch.nn.utils.rnn import PackedSequence

from modscope.errors import UsageError

MAX_DEPTH = 32


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor], depth: int = 0) -> Any:
    """``value`` with every tensor replaced by ``fn(tensor)``; containers rebuilt with their own types."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if depth >= MAX_DEPTH or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, PackedSequence):
        return _packed(value, fn)
    if isinstance(value, (tuple, list)):
        items = [map_tensors(v, fn, depth + 1) for v in value]
        return value if _same(items, value) else _sequence(value, items)
    if isinstance(value, dict):
        items = {k: map_tensors(v, fn, depth + 1) for k, v in value.items()}
        return value if _same(items.values(), value.values()) else _mapping(value, items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value) if hasattr(value, f.name)]
        changed = {n: new for n in names if (new := map_tensors(getattr(value, n), fn, depth + 1)) is not getattr(value, n)}
        return _dataclass(value, changed) if changed else value
    return value


def _same(new, old) -> bool:
    return all(a is b for a, b in zip(new, old))


def _packed(value: PackedSequence, fn) -> PackedSequence:
    """``data`` and the permutation indices mapped; ``batch_sizes`` kept (it must stay a CPU int64 tensor)."""
    data = fn(value.data)
    sorted_indices = None if value.sorted_indices is None else fn(value.sorted_indices)
    unsorted_indices = None if value.unsorted_indices is None else fn(value.unsorted_indices)
    if data is value.data and sorted_indices is value.sorted_indices and unsorted_indices is value.unsorted_indices:
        return value
    return type(value)(data, value.batch_sizes, sorted_indices, unsorted_indices)


def _sequence(value, items: list):
    kind = type(value)
    if kind is tuple or kind is list:
        return kind(items)
    if hasattr(value, "_fields"):  # namedtuple
        return kind(*items)
    if isinstance(value, list):
        rebuilt = copy.copy(value)  # a list subclass keeps its attributes
        rebuilt[:] = items
        return rebuilt
    return _rebuilt(value, lambda: kind(items))


def _mapping(value: dict, items: dict) -> dict:
    if type(value) is dict:
        return items
    try:  # OrderedDict, defaultdict (keeps its factory), ModelOutput-style subclasses (keep their attributes)
        rebuilt = copy.copy(value)
        for key, item in items.items():
            rebuilt[key] = item
        return rebuilt
    except Exception:
        return _rebuilt(value, lambda: type(value)(items))


def _dataclass(value, changed: dict):
    try:
        rebuilt = copy.copy(value)
        for name, item in changed.items():
            object.__setattr__(rebuilt, name, item)  # frozen dataclasses too
        return rebuilt
    except Exception:
        return _rebuilt(value, lambda: dataclasses.replace(value, **changed))


def _rebuilt(value, make):
    try:
        return make()
    except Exception as exc:
        raise UsageError(
            f"an input of type {type(value).__name__} holds tensors modscope had to move or convert, and it cannot "
            f"be rebuilt with them ({type(exc).__name__}: {exc}); pass its tensors in a tuple, dict or namedtuple"
        ) from exc
