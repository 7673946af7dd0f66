"""Running a model on the meta device: a data-free copy, and real tensors for the few modules that need data.

Meta tensors have shapes and dtypes but no values, so a 70B model's forward costs no memory. Checks on
small tensors whose values are known (a mask's ``.all()``) are answered by ``meta_values``; Python code that
looks at values derived from the weights (``while x.abs().sum() > 1``, ``y[y > 0]``) cannot run on meta: such
a module is *materialized*: its weights become small random CPU tensors, its inputs real CPU tensors (their
known values where there are twins, random of the same shapes otherwise) on the way in, and its outputs are
turned back into meta tensors on the way out, so the rest of the model stays on meta.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.forward.meta_values import MetaValues
from modscope.collect.forward.structure import iter_tensors, map_tensors
from modscope.collect.hooks import module_hooks
from modscope.collect.static.hazards import plain_attributes
from modscope.core.walk import deep_copy, fresh_lazy, to_empty, visits

#: a module is run on real CPU tensors only when its weights and its inputs are each at most this big
FALLBACK_MAX_BYTES = 1 << 30
#: the environment variable that overrides FALLBACK_MAX_BYTES (bytes)
FALLBACK_ENV = "MODSCOPE_META_FALLBACK_MAX_BYTES"


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters, buffers and plain tensor attributes are on meta (no data copied).

    Tied tensors stay tied. The original is not touched.
    """
    memo: dict[int, object] = {}
    for visit in visits(model):
        if not visit.first:
            continue
        module = visit.module
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is not None and id(t) not in memo:
                memo[id(t)] = _to_meta(t)
        for _, t in plain_attributes(module):
            if id(t) not in memo:
                memo[id(t)] = _to_meta(t)
    return deep_copy(model, memo)


def _to_meta(t: torch.Tensor) -> torch.Tensor:
    if is_lazy(t):  # holds no data; the pass materialises it on meta
        return fresh_lazy(t, "meta")
    meta = t.detach().to("meta")
    if isinstance(t, nn.Parameter):
        return nn.Parameter(meta, requires_grad=t.requires_grad)
    return meta


def module_bytes(module: nn.Module) -> int:
    """Bytes of every tensor a module holds (parameters, buffers, plain tensor attributes), shared ones once."""
    seen: dict[int, torch.Tensor] = {}
    for visit in visits(module):
        m = visit.module
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                seen[id(t)] = t
        for _, t in plain_attributes(m):
            seen[id(t)] = t
    return sum(t.numel() * t.element_size() for t in seen.values())


def materialize(module: nn.Module, device: str = "cpu") -> None:
    """Give a meta module real, random weights on ``device`` (in place: only ever called on a meta copy).

    Values come from each submodule's ``reset_parameters`` where it has one, else small normal noise;
    plain tensor attributes become uniform [0, 1) like ``torch.rand``.
    """
    to_empty(module, device)
    with torch.no_grad():
        for visit in visits(module):
            m = visit.module
            for t in (*m._parameters.values(), *m._buffers.values()):
                if t is not None:
                    _fill(t, normal=True)
            for attr, value in list(vars(m).items()):
                _materialize_attribute(m, attr, value, device)
        for visit in visits(module):
            reset = getattr(visit.module, "reset_parameters", None)
            if callable(reset):
                reset()


def copy_real_weights(source: nn.Module, target: nn.Module) -> bool:
    """Copy ``source``'s parameter and buffer values into the materialized ``target`` (its meta copy), tensor by
    tensor in walk order; False, copying nothing, when ``source`` holds meta tensors or the two differ."""
    def tensors(module):
        return [t for v in visits(module) if v.first for t in (*v.module._parameters.values(), *v.module._buffers.values())
                if t is not None]

    pairs = list(zip(tensors(source), tensors(target)))
    if len(pairs) != len(tensors(target)) or any(
        s.is_meta or s.shape != t.shape or s.dtype != t.dtype or s.layout is not torch.strided for s, t in pairs
    ):
        return False
    with torch.no_grad():
        for s, t in pairs:
            t.copy_(s.detach())
    return True


def _materialize_attribute(module: nn.Module, attr: str, value, device: str) -> None:
    if isinstance(value, torch.Tensor) and value.is_meta:
        setattr(module, attr, _random_like(value, device))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, torch.Tensor) and item.is_meta:
                value[i] = _random_like(item, device)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, torch.Tensor) and item.is_meta:
                value[key] = _random_like(item, device)


def _random_like(t: torch.Tensor, device: str) -> torch.Tensor:
    real = torch.empty(t.shape, dtype=t.dtype, device=device)
    _fill(real, normal=False)
    return nn.Parameter(real, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else real


def _fill(t: torch.Tensor, *, normal: bool) -> None:
    if t.is_floating_point() or t.is_complex():
        t.normal_(0, 0.02) if normal else t.uniform_(0, 1)
    else:
        t.zero_()


def real_inputs(value, device: str = "cpu", values: MetaValues | None = None):
    """``value`` with every meta tensor replaced by a real one of the same shape and dtype: a copy of its twin
    (its known values, e.g. the inputs as given) where ``values`` has one, else random."""

    def convert(t: torch.Tensor) -> torch.Tensor:
        if not t.is_meta:
            return t
        twin = values.twin(t) if values is not None else None
        if twin is not None:
            real = twin.to(device, copy=True)
        else:
            real = torch.empty(t.shape, dtype=t.dtype, device=device)
            with torch.no_grad():
                if real.is_floating_point() or real.is_complex():
                    real.normal_()
                else:
                    real.zero_()
        return real.requires_grad_(t.requires_grad and (real.is_floating_point() or real.is_complex()))

    return map_tensors(value, convert)


def meta_outputs(value, values: MetaValues | None = None):
    """``value`` with every real tensor replaced by a meta tensor of the same shape, dtype and strides (which
    keeps the real one as its twin when ``values`` is given and it is small)."""

    def convert(t: torch.Tensor) -> torch.Tensor:
        if t.is_meta:
            return t
        meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
        if values is not None and t.numel() * t.element_size() <= values.max_bytes:
            values.add(meta, t.detach())
        return meta

    return map_tensors(value, convert)


def input_twins(given, moved) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(meta tensor, the real tensor it was moved from) for each input ``moved`` to meta from ``given``."""
    pairs = zip(iter_tensors(given, limit=None), iter_tensors(moved, limit=None))
    return [(m, g) for g, m in pairs if m.is_meta and not g.is_meta and m.shape == g.shape and m.dtype == g.dtype]


def tensor_twins(original: nn.Module, copy: nn.Module, max_bytes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(meta tensor of ``copy``, real tensor of ``original``) for the buffers and plain tensor attributes of at
    most ``max_bytes`` (parameters are the weights: never)."""
    pairs = []
    for a, b in zip(visits(original), visits(copy)):
        if not a.first or type(a.module) is not type(b.module):
            continue
        found = [(b.module._buffers.get(k), t) for k, t in a.module._buffers.items()]
        mine = dict(plain_attributes(b.module))
        found += [(mine.get(k), t) for k, t in plain_attributes(a.module)]
        for meta, real in found:
            if isinstance(meta, torch.Tensor) and meta.is_meta and _real_small(real, max_bytes):
                pairs.append((meta, real))
    return pairs


def _real_small(t, max_bytes: int) -> bool:
    real = isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and not t.is_meta
    return real and t.numel() * t.element_size() <= max_bytes


@contextlib.contextmanager
def real_tensor_islands(
    model: nn.Module, modules: list[tuple[str, nn.Module]], counter=None, values: MetaValues | None = None
) -> Iterator[None]:
    """While active, the materialized ``modules`` get real inputs and hand meta outputs back to their callers.

    ``counter`` (a FlopCounter) is told that the stand-in tensors are made by modscope, not by the model;
    ``values``: the run's known values, used for the inputs and kept for the outputs.
    """
    quiet = counter.unlisted if counter is not None else contextlib.nullcontext

    def pre(name, module, args, kwargs):
        with quiet():
            return real_inputs(args, values=values), real_inputs(kwargs, values=values)

    def post(name, module, args, kwargs, output, error):
        if error is not None:
            return None
        with quiet():
            return meta_outputs(output, values)

    with module_hooks(model, pre=pre, post=post, modules=modules, replaces=True):
        yield
