"""Lazy tensors as a forward pass materialised them: their shapes are read at the end of the pass, before
``preserved_state`` makes them lazy again, so a summary can count them while the model stays as it was.

>>> with materialized_shapes(model, shapes): model(x)     # shapes == {"0.weight": ((4, 5), "float32"), ...}
>>> parameters = with_shapes(report.parameters, shapes)    # TensorInfo records with shape, numel and bytes
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Iterable, Iterator

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.static.tensors import dtype_name
from modscope.core.walk import join, visits
from modscope.reports import TensorInfo


def lazy_tensors(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """(name, module, table, key) of every uninitialized parameter/buffer, under its first name."""
    out, seen = [], set()
    for visit in visits(model):
        if not visit.first:
            continue
        for table in ("_parameters", "_buffers"):
            for key, t in getattr(visit.module, table).items():
                if t is not None and is_lazy(t) and id(t) not in seen:
                    seen.add(id(t))
                    out.append((join(visit.name, key), visit.module, table, key))
    return out


@contextlib.contextmanager
def materialized_shapes(model: nn.Module, into: dict[str, tuple[tuple[int, ...], str]]) -> Iterator[None]:
    """On exit (even after a failed forward), ``into`` gets name -> (shape, dtype) of each lazy tensor of
    ``model`` that is initialized now. Reads shapes only: no data, no hooks."""
    lazy = lazy_tensors(model)
    try:
        yield
    finally:
        for name, module, table, key in lazy:
            t = getattr(module, table).get(key)
            if isinstance(t, torch.Tensor) and not is_lazy(t):
                into[name] = (tuple(t.shape), dtype_name(t.dtype))


def with_shapes(infos: Iterable[TensorInfo], shapes: dict[str, tuple[tuple[int, ...], str]]) -> tuple[TensorInfo, ...]:
    """``infos`` with the uninitialized ones that ``shapes`` names given their materialised shape, numel, bytes."""
    out = []
    for info in infos:
        if info.initialized or info.name not in shapes:
            out.append(info)
            continue
        shape, dtype = shapes[info.name]
        numel = math.prod(shape)
        itemsize = getattr(torch, dtype).itemsize
        out.append(replace(info, shape=shape, dtype=dtype, numel=numel, bytes=numel * itemsize))
    return tuple(out)
