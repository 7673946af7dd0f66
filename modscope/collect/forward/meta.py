"""Running a model on the meta device: a data-free copy, and real tensors for the few modules that need data.

Meta tensors have shapes and dtypes but no values, so a 70B model's forward costs no memory. Python code
that looks at values (``while x.abs().sum() > 1``, ``.item()``, ``nonzero``) cannot run on them; such a
module is *materialized*: its weights become small random CPU tensors, its inputs are replaced by random
CPU tensors of the same shapes on the way in, and its outputs are turned back into meta tensors on the way
out, so the rest of the model stays on meta.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.forward.structure import map_tensors
from modscope.collect.hooks import module_hooks
from modscope.collect.static.hazards import plain_attributes
from modscope.core.walk import deep_copy, fresh_lazy, to_empty, visits

#: a module is run on real CPU tensors only when its weights and its inputs are each at most this big
FALLBACK_MAX_BYTES = 1 << 30


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


_META_ERROR = re.compile(r"\bmeta\b|data[- ]dependent", re.IGNORECASE)


def is_meta_error(error: BaseException) -> bool:
    """Did this fail because the tensors were meta (no data, no kernel), rather than because of a bug?"""
    return bool(_META_ERROR.search(str(error)))


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


def real_inputs(value, device: str = "cpu"):
    """``value`` with every meta tensor replaced by a random real tensor of the same shape and dtype."""

    def convert(t: torch.Tensor) -> torch.Tensor:
        if not t.is_meta:
            return t
        real = torch.empty(t.shape, dtype=t.dtype, device=device)
        with torch.no_grad():
            if real.is_floating_point() or real.is_complex():
                real.normal_()
            else:
                real.zero_()
        return real.requires_grad_(t.requires_grad and real.is_floating_point())

    return map_tensors(value, convert)


def meta_outputs(value):
    """``value`` with every real tensor replaced by a meta tensor of the same shape, dtype and strides."""
    return map_tensors(value, lambda t: t if t.is_meta else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta"))


@contextlib.contextmanager
def real_tensor_islands(model: nn.Module, modules: list[tuple[str, nn.Module]], counter=None) -> Iterator[None]:
    """While active, the materialized ``modules`` get real inputs and hand meta outputs back to their callers.

    ``counter`` (a FlopCounter) is told that the stand-in tensors are made by modscope, not by the model.
    """
    quiet = counter.unlisted if counter is not None else contextlib.nullcontext

    def pre(name, module, args, kwargs):
        with quiet():
            return real_inputs(args), real_inputs(kwargs)

    def post(name, module, args, kwargs, output, error):
        if error is not None:
            return None
        with quiet():
            return meta_outputs(output)

    with module_hooks(model, pre=pre, post=post, modules=modules, replaces=True):
        yield
