"""Small meta ops answered by their CPU kernels: torch's meta kernels for these are Python, its CPU ones are not.

Most of torch's meta kernels for pointwise ops and normalizations are Python (``torch._refs``, decompositions):
on meta, ``hardswish`` of a 1x16x32x32 tensor costs ~3-18 ms, on CPU 14 us, so a small model ran slower on
meta than for real. A pointwise, normalization or reduction op whose tensors are all small (``STAND_IN_MAX_BYTES``
together) is run by its CPU kernel on stand-ins filled with ones, with the same shapes, strides and dtypes,
and hands back empty meta tensors with the CPU result's metadata. The output shapes of these ops depend on
the inputs' shapes alone (never on values), and their CPU kernels implement the same TensorIterator rules for
strides and dtypes that the meta kernels mirror. Anything the CPU kernel refuses (a dtype CPU lacks, an
integer power with a negative exponent) or any result that is not a fresh plain tensor goes to the meta
kernel, as before. Eval-mode batch norm runs the CPU kernel in training mode: in eval its saved statistics
are empty on CPU but (C,) on meta, as the training kernel's are (the running stand-ins it updates are dropped).
Where a rule of ``meta_rules`` answers (float32/float64 convolutions, norms, common pointwise ops in
row-major layouts), it answers first, at any size: shape arithmetic costs less than a kernel on stand-ins.

``MetaResultMode`` is the dispatch mode of meta passes that count no FLOPs (the training pass that measures
saved tensors): the same cache and stand-ins, and higher order operators (``torch.cond``) run as with no mode.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modscope.collect.forward import cpu_choices, meta_rules
from modscope.collect.forward.meta_cache import EXCLUDED_TAGS, MetaResultCache, can_cache

#: ops whose tensors (inputs and results) together take at most this many bytes run on CPU stand-ins
STAND_IN_MAX_BYTES = 1 << 20

_aten = torch.ops.aten
_NORMS = frozenset(
    getattr(getattr(_aten, name, None), "default", None)
    for name in (
        "native_batch_norm", "native_layer_norm", "native_group_norm",
    )
) - {None}
# reductions over given dims: the result's shape, strides and dtype follow from the input's and the arguments
# (torch's meta kernel for ``mean`` is Python: ~0.4 ms a call, a squeeze-excitation block's pooling)
_REDUCTIONS = frozenset(
    getattr(getattr(_aten, name, None), overload, None)
    for name, overload in (("mean", "dim"), ("sum", "dim_IntList"), ("amax", "default"), ("amin", "default"))
) - {None}
# in eval mode, batch norm's saved mean and invstd are empty on CPU but (C,) on meta: only training calls stand in
_BATCH_NORM = getattr(getattr(_aten, "native_batch_norm", None), "default", None)
_FULL_FLOATS = (torch.float32, torch.float64)
_POINTWISE = getattr(torch.Tag, "pointwise", None)
# elementwise in shape (the result has the input's shape) but not tagged pointwise in torch's schema
_SHAPE_PRESERVING = frozenset(
    getattr(getattr(_aten, name, None), overload, None)
    for name, overload in (("hardswish", "default"), ("_softmax", "default"), ("_log_softmax", "default"),
                           ("masked_fill", "Tensor"), ("_prelu_kernel", "default"))
) - {None}


def _elementwise(func) -> bool:
    return func in _SHAPE_PRESERVING or (_POINTWISE is not None and _POINTWISE in func.tags)


def can_stand_in(func) -> bool:
    """A cacheable op whose output shapes follow from its input shapes: pointwise, a batch/layer/group norm, or
    a reduction over given dims."""
    if not can_cache(func):
        return False
    return func in _NORMS or func in _REDUCTIONS or _elementwise(func)


def can_stand_in_place(func) -> bool:
    """A built-in pointwise op that writes its first argument and returns it (``relu_``, ``hardswish_``, ``add_``)."""
    try:
        schema, tags, namespace = func._schema, set(func.tags), func.namespace
    except AttributeError:
        return False
    if namespace not in ("aten", "prims") or tags & EXCLUDED_TAGS:
        return False
    name, overload = func._overloadpacket.__name__, func._overloadname
    functional = getattr(getattr(_aten, name[:-1], None), overload, None) if name.endswith("_") else None
    if not (_elementwise(func) or (functional is not None and _elementwise(functional))):
        return False
    first, *rest = schema.arguments or (None,)
    if first is None or first.alias_info is None or not first.alias_info.is_write or len(schema.returns) != 1:
        return False
    back = schema.returns[0].alias_info
    return back is not None and back.before_set == first.alias_info.before_set and all(
        a.alias_info is None for a in rest
    )


def in_place_on_cpu(func, args: tuple, kwargs: dict | None) -> bool:
    """Check an in-place pointwise op on meta ``args`` with its CPU kernel on stand-ins (meta tensors hold
    nothing to write): True when the CPU kernel accepted them, so the op's result is ``args[0]`` itself.
    Calls of the common float ops (a residual ``out += identity``, ``relu_``) are first checked by their rule
    (``meta_rules.in_place_fits``), at any size: torch's meta kernels for them are Python, ~70 us a call."""
    if meta_rules.in_place_fits(func, args, kwargs):
        return True
    return on_cpu(func, args, kwargs, fresh=False) is not None


def on_cpu(func, args: tuple, kwargs: dict | None, *, fresh: bool = True):
    """``func``'s result for meta ``args``, computed by its CPU kernel on stand-ins; None when the op's tensors
    are too big, not all plain meta tensors, or the CPU kernel refuses them."""
    metas: list[torch.Tensor] = []
    try:
        total = _gather(args, metas) + (_gather(kwargs, metas) if kwargs else 0)
    except _Refused:
        return None
    if func in _NORMS and (not args or getattr(args[0], "dtype", None) not in _FULL_FLOATS):
        return None  # half/bfloat16: CPU's batch norm keeps saved statistics in that dtype, meta float32
    if func is _BATCH_NORM and len(args) > 5 and args[5] is False:
        args = (*args[:5], True, *args[6:])  # eval: CPU's saved statistics are empty, meta's are (C,) as in training
    if not metas or total > STAND_IN_MAX_BYTES // 2 or _result_numel(func, metas) * 16 > STAND_IN_MAX_BYTES // 2:
        return None
    stand_ins: dict[int, torch.Tensor] = {}
    try:
        out = func(*_replace(args, stand_ins), **(_replace(kwargs, stand_ins) if kwargs else {}))
    except Exception:  # e.g. integer ops the CPU kernel refuses for these values, or a dtype CPU lacks
        return None
    if not fresh:
        return out if out is stand_ins.get(id(args[0])) else None
    return _as_meta(out, stand_ins)


class _Refused(Exception):
    pass


def _gather(value, metas: list) -> int:
    """Bytes of the meta tensors in ``value`` (collected into ``metas``); _Refused for any other tensor."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter) or not value.is_meta:
            raise _Refused
        if value.layout is not torch.strided or value.is_conj() or value.is_neg() or value._is_zerotensor():
            raise _Refused
        metas.append(value)
        return value.untyped_storage().nbytes()
    if isinstance(value, (tuple, list)):
        return sum(_gather(v, metas) for v in value)
    if isinstance(value, dict):
        return sum(_gather(v, metas) for v in value.values())
    return 0


def _result_numel(func, metas: list) -> int:
    """An upper bound on one result's elements: the broadcast shape (pointwise) or the largest input (norms,
    reductions)."""
    largest = max(t.numel() for t in metas)
    if func in _NORMS or func in _REDUCTIONS:
        return largest
    shapes = [t.shape for t in metas]
    numel = 1
    for i in range(1, max(len(shape) for shape in shapes) + 1):  # torch.broadcast_shapes costs ~75 us a call
        sizes = {shape[-i] for shape in shapes if len(shape) >= i} - {1}
        if len(sizes) > 1:
            return STAND_IN_MAX_BYTES  # not broadcastable: let the meta kernel say so
        numel *= sizes.pop() if sizes else 1
    return max(numel, largest)


def _replace(value, stand_ins: dict):
    if isinstance(value, torch.Tensor):
        made = stand_ins.get(id(value))
        if made is None:
            made = stand_ins[id(value)] = _stand_in(value)
        return made
    if isinstance(value, tuple):
        return tuple(_replace(v, stand_ins) for v in value)
    if isinstance(value, list):
        return [_replace(v, stand_ins) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, stand_ins) for k, v in value.items()}
    return value


def _stand_in(meta: torch.Tensor) -> torch.Tensor:
    """A CPU tensor of ones with ``meta``'s shape, strides, storage offset, dtype and storage size."""
    elements = meta.untyped_storage().nbytes() // meta.element_size()
    storage = torch.ones(elements, dtype=meta.dtype)
    return storage.as_strided(meta.shape, meta.stride(), meta.storage_offset())


def _as_meta(out, stand_ins: dict):
    """Empty meta tensors with the CPU results' metadata; None unless every result is a fresh plain tensor."""
    results = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, tuple) else None
    if not results:
        return None
    inputs = {t.untyped_storage()._cdata for t in stand_ins.values()}
    made = []
    for t in results:
        if type(t) is not torch.Tensor or t.layout is not torch.strided or t.storage_offset() != 0:
            return None
        if t.untyped_storage()._cdata in inputs or t.is_conj() or t.is_neg() or t.is_quantized:
            return None
        made.append(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta"))
    return tuple(made) if isinstance(out, tuple) else made[0]


def compute(func, args: tuple, kwargs: dict | None, stand_in: bool):
    """Run one op that missed the cache: by rule where one answers (``meta_rules``: shape arithmetic, no kernel
    at all), else on CPU stand-ins when ``stand_in`` allows and that works (a real kernel on tensors of ones:
    a mid-size batch norm cost ~0.1 ms that way), else as is."""
    if stand_in or func in meta_rules.RULED:
        out = meta_rules.result(func, args, kwargs)
        if out is None and stand_in:
            out = on_cpu(func, args, kwargs)
        if out is not None:
            return out
    return func(*args, **kwargs) if kwargs else func(*args)


class MetaResultMode(TorchDispatchMode):
    """Repeated functional meta ops from a ``MetaResultCache``, small ones on CPU stand-ins; nothing counted."""

    supports_higher_order_operators = True

    def __init__(self) -> None:
        super().__init__()
        self.cache = MetaResultCache()
        self.ops: dict[int, tuple] = {}  # id(func) -> (func, cacheable, stand-in, in-place stand-in)
        self.twin = cpu_choices.active()  # a CPU model's twin: ops whose meta result hides values refuse it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if isinstance(func, torch._ops.HigherOrderOperator):
            return func(*args, **(kwargs or {}))  # the mode is popped here: torch.cond runs as with no mode
        if self.twin:
            cpu_choices.check_op(func, args)
        known = self.ops.get(id(func))
        if known is None:
            known = self.ops[id(func)] = (func, can_cache(func), can_stand_in(func), can_stand_in_place(func))
        if not known[1]:
            if known[3] and in_place_on_cpu(func, args, kwargs):
                return args[0]
            return func(*args, **kwargs) if kwargs else func(*args)
        cache = self.cache
        key = cache.key(id(func), args, kwargs)
        if key is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        entry = cache.entries.get(key)
        if entry is not None:
            return cache.replay(entry)
        out = compute(func, args, kwargs, known[2])
        if not cache.remember(key, args, kwargs, out, 0):
            self.ops[id(func)] = (func, False, False, False)
        return out
