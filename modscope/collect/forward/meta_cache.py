"""Results of meta-device ops, remembered for one pass: the 80 identical blocks of a decoder pay once.

A meta tensor has a shape, strides and a dtype but no values, so what a functional op returns on meta is
decided by its arguments' metadata and its non-tensor arguments alone. Many of torch's meta kernels are
Python (``torch._refs``, ``torch._meta_registrations``): 0.16 ms an add, 1.3 ms a layer norm, 2.8 ms causal
attention on a large decoder's shapes. A repeated call is answered here by allocating empty meta tensors
with the remembered metadata (about 1 us each). FakeTensorMode keeps a cache on the same principle.

An op is answered from the cache only when everything it could depend on is in the key, and the first
call's result could be reproduced exactly:

- the op is a built-in (aten, prims) and functional: no argument or result aliases or is written (no views,
  no in-place, no ``out=``), every result is a plain ``Tensor``, and it is not tagged random, data-dependent
  or dynamic-shaped (custom ops are never cached: their fake kernels may read state of their own);
- every tensor argument is a plain, strided meta tensor (``Tensor`` or ``Parameter``) and every other
  argument a number, string, bool, None, dtype, device, layout or memory format (or a list of these); the
  key holds each tensor's dtype, shape, strides, storage offset, requires_grad and its conjugate, negative and
  zero-tensor flags (``dot`` of a conjugated vector returns a conjugated result), plus grad mode and the
  default dtype;
- the first call's results are fresh, distinct, plain meta tensors without those flags that an
  ``empty_strided`` of the same shape, strides and dtype matches down to the storage size. An op whose
  result is not is never cached again (the caller's decision: ``remember`` says so).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from modscope.collect.forward.structure import iter_tensors

_TENSOR_TYPES = (torch.Tensor, nn.Parameter)
_VALUE_TYPES = frozenset(
    {int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format}
)
_BUILTIN = frozenset({"aten", "prims"})
EXCLUDED_TAGS = frozenset(
    getattr(torch.Tag, name)
    for name in ("nondeterministic_seeded", "dynamic_output_shape", "data_dependent_output", "inplace_view")
    if hasattr(torch.Tag, name)
)


class _NotCacheable(Exception):
    pass


class Entry:
    """What one op returned for one key: ``outputs`` (shape, stride, dtype) per tensor, and its FLOPs."""

    __slots__ = ("outputs", "as_tuple", "flops")

    def __init__(self, outputs: tuple, as_tuple: bool, flops: int):
        self.outputs = outputs
        self.as_tuple = as_tuple
        self.flops = flops


def can_cache(func) -> bool:
    """Is ``func`` a built-in (aten/prims) OpOverload that is functional, deterministic in its metadata, and
    returns only Tensors? Custom ops (torch.library) are never cached: their fake kernels are Python code that
    may read state outside their arguments (a KV length kept on the side, say)."""
    try:
        schema = func._schema
        tags = set(func.tags)
        namespace = func.namespace
    except AttributeError:
        return False
    if namespace not in _BUILTIN or tags & EXCLUDED_TAGS or not schema.returns:
        return False
    if any(a.alias_info is not None for a in schema.arguments):
        return False
    return all(r.alias_info is None and str(r.type) == "Tensor" for r in schema.returns)


def _key_of(value):
    kind = type(value)
    if kind in _TENSOR_TYPES:
        if not value.is_meta or value.layout is not torch.strided:
            raise _NotCacheable
        return (
            value.dtype, value.shape, value.stride(), value.storage_offset(), value.requires_grad,
            value.is_conj(), value.is_neg(), value._is_zerotensor(),  # flags some ops pass on to their results
        )
    if kind in _VALUE_TYPES:
        return (kind, value)
    if kind is list or kind is tuple:
        return (kind, *map(_key_of, value))
    raise _NotCacheable


class MetaResultCache:
    """One pass's remembered meta results, keyed by op and argument metadata."""

    def __init__(self) -> None:
        self.entries: dict[tuple, Entry] = {}
        self.reused = 0  # calls answered from the cache (for tests and notes)

    def key(self, op_id: int, args: tuple, kwargs: dict | None) -> tuple | None:
        """The cache key of one call, or None when an argument is not something the cache can describe."""
        try:
            arg_key = _key_of(args)
            kwarg_key = _key_of(tuple(kwargs.items())) if kwargs else None
        except (_NotCacheable, RuntimeError, TypeError):  # RuntimeError: e.g. nested tensors have no strides
            return None
        return (op_id, arg_key, kwarg_key, torch.is_grad_enabled(), torch.get_default_dtype())

    def replay(self, entry: Entry):
        """Fresh meta tensors with the remembered metadata (the op's result, without running it)."""
        self.reused += 1
        made = [torch.empty_strided(size, stride, dtype=dtype, device="meta") for size, stride, dtype in entry.outputs]
        return tuple(made) if entry.as_tuple else made[0]

    def remember(self, key: tuple, args: tuple, kwargs: dict | None, out, flops: int) -> bool:
        """File the first call's result under ``key``; False (nothing filed) when it is not reproducible, e.g.
        ``_unsafe_view``, whose schema promises a fresh tensor but which returns a view."""
        outputs = _reproducible(out, args, kwargs)
        if outputs is None:
            return False
        self.entries[key] = Entry(outputs, isinstance(out, tuple), flops)
        return True


def _reproducible(out, args: tuple, kwargs: dict | None) -> tuple | None:
    """(shape, stride, dtype) per result when ``empty_strided`` reproduces every result exactly, else None."""
    results = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else None
    if not results or isinstance(out, list):
        return None
    inputs = {_storage_id(t) for t in iter_tensors((args, kwargs), limit=None)}
    seen = set()
    specs = []
    for t in results:
        if type(t) is not torch.Tensor or not t.is_meta or t.layout is not torch.strided:
            return None
        if t.is_quantized or t.is_conj() or t.is_neg() or t._is_zerotensor():
            return None
        if t.storage_offset() != 0 or t._base is not None:
            return None
        storage = _storage_id(t)
        if storage in inputs or storage in seen:
            return None
        seen.add(storage)
        spec = (t.shape, t.stride(), t.dtype)
        replica = torch.empty_strided(*spec[:2], dtype=spec[2], device="meta")
        if replica.untyped_storage().nbytes() != t.untyped_storage().nbytes():
            return None
        specs.append(spec)
    return tuple(specs)


def _storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata
