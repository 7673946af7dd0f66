"""FLOPs from PyTorch's own ``FlopCounterMode``, plus the ops it ran without a formula.

``FlopCounterMode`` counts matmuls, convolutions and attention (2 FLOPs per multiply-add) and silently counts
every other op as zero. ``FlopCounter`` is the same counter with the same formulas and totals that also
remembers those other ops, so reports can say what was *not* counted. Views (reshape, transpose, ...) do no
arithmetic and are left out of that list.

Two pieces of ``FlopCounterMode`` are dropped because modscope does not need them and they cost time on
every op: its ``ModuleTracker`` (modscope attributes FLOPs to modules with its own hooks, reading the total
on entry and exit) and, for ops that have no formula and no CompositeImplicitAutograd kernel, the attempt to
decompose them, which always returns NotImplemented for such ops. Both are guarded: on a torch whose
internals differ, the stock ``FlopCounterMode`` runs unchanged. Each op is looked up once (by identity, not
by hashing it on every call), and a formula that sees only shapes is evaluated once per distinct set of
shapes: the 80 identical blocks of a decoder cost one evaluation per matmul shape, not 80.

``FlopCounter(reuse_meta=True)`` (meta passes) also answers repeated functional ops on meta tensors from a
``MetaResultCache`` (``collect/meta_cache.py``) and runs small pointwise and normalization ops by their CPU
kernels on stand-ins (``collect/forward/meta_stand_ins.py``): the counter's dispatch mode is the one place
every op passes through, and a second Python mode would cost a second dispatch per op.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from modscope.collect import write_guard
from modscope.collect.forward.meta_cache import MetaResultCache, can_cache
from modscope.collect.forward.meta_stand_ins import can_stand_in, can_stand_in_place, compute, in_place_on_cpu

#: False on a torch whose FlopCounterMode routes counting differently; reports then say "unknown".
CAN_LIST_UNCOUNTED = callable(getattr(FlopCounterMode, "_count_flops", None))

_Inner = getattr(flop_counter, "_FlopCounterMode", None)
_CIA = torch._C.DispatchKey.CompositeImplicitAutograd
_NORMS = {
    getattr(getattr(torch.ops.aten, op, None), "default", None)
    for op in ("native_batch_norm", "native_layer_norm", "native_group_norm", "_native_batch_norm_legit",
               "_native_batch_norm_legit_no_training")
} - {None}
# Ops that _FlopCounterMode hands back (NotImplemented) untouched: they must keep going through it.
_PASSED_BACK = {
    getattr(getattr(torch.ops, ns), op, None)
    for ns, op in (("aten", "sym_is_contiguous"), ("aten", "is_contiguous"), ("aten", "is_strides_like_format"),
                   ("aten", "is_non_overlapping_and_dense"), ("aten", "size"), ("aten", "sym_size"), ("aten", "stride"),
                   ("aten", "sym_stride"), ("aten", "storage_offset"), ("aten", "sym_storage_offset"),
                   ("aten", "numel"), ("aten", "sym_numel"), ("aten", "dim"), ("prim", "layout"))
}


def _cpu_attention_formulas() -> dict:
    """torch's SDPA formulas for the CPU flash-attention kernels, which FlopCounterMode has no entry for: on CPU
    ``scaled_dot_product_attention`` dispatches to them (counted as 0 before), while on meta it decomposes into
    counted matmuls, so the same model gave two totals."""
    forward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    count = getattr(flop_counter, "sdpa_flop_count", None)
    count_backward = getattr(flop_counter, "sdpa_backward_flop_count", None)
    formulas = {}
    if forward is not None and count is not None:
        formulas[forward] = lambda q, k, v, *args, out_shape=None, **kwargs: count(q, k, v)
    if backward is not None and count_backward is not None:
        formulas[backward] = lambda g, q, k, v, *args, out_shape=None, **kwargs: count_backward(g, q, k, v)
    return formulas


def _rnn_layer_flops(input_shape, weight0_shape, weight1_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten.mkldnn_rnn_layer`` (CPU LSTM, one layer and direction): the input and hidden projections of every
    time step, 2 per multiply-add, biases not counted: what the decomposition run on meta counts with ``mm``."""
    steps = 1
    for size in input_shape[:-1]:
        steps *= size
    return 2 * steps * (weight0_shape[0] * weight0_shape[1] + weight1_shape[0] * weight1_shape[1])


#: formulas FlopCounterMode lacks for ops that replace a counted decomposition on some device
EXTRA_FORMULAS = {
    **{
        packet: _rnn_layer_flops
        for packet in (getattr(torch.ops.aten, "mkldnn_rnn_layer", None),)
        if packet is not None
    },
    **_cpu_attention_formulas(),
}
#: ops that do multiply-adds but have no formula: when one runs, the total is a lower bound
MULTIPLY_ADD_OPS = frozenset({
    "aten._cudnn_rnn", "aten.miopen_rnn", "aten.mkldnn_rnn_layer", "aten._thnn_fused_lstm_cell",
    "aten._thnn_fused_gru_cell", "aten.quantized_lstm", "aten.quantized_gru", "aten.quantized_lstm_cell",
    "aten.quantized_gru_cell", "aten.quantized_rnn_tanh_cell", "aten.quantized_rnn_relu_cell", "aten._int_mm",
    "aten._weight_int8pack_mm", "aten._weight_int4pack_mm", "aten.mkldnn_linear", "aten.mkldnn_convolution",
    "aten._cdist_forward", "aten.fbgemm_linear_int8_weight", "aten.fbgemm_linear_fp16_weight",
    "quantized.linear", "quantized.linear_dynamic", "quantized.conv2d", "quantized.conv1d", "quantized.conv3d",
})


class _Tracker:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP goes to "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class _Op:
    """What the counter learnt about one op overload on its first call."""

    __slots__ = ("func", "packet", "direct", "reusable", "stand_in", "in_place", "formula", "by_shape", "calls")

    def __init__(self, func, formula, direct: bool, reusable: bool, in_place: bool = False):
        self.func = func  # kept alive, so the id() it is filed under stays its own
        self.packet = getattr(func, "_overloadpacket", func)
        self.direct = direct
        self.reusable = reusable  # results on meta may come from the pass's MetaResultCache
        self.stand_in = reusable and can_stand_in(func)  # small calls may run on CPU stand-ins (meta_stand_ins)
        self.in_place = in_place  # on meta, an in-place pointwise op checked by its CPU kernel on stand-ins
        self.formula = formula
        # Formulas registered without get_raw see only shapes: their results can be reused for equal shapes.
        self.by_shape: dict | None = {} if getattr(formula, "__code__", None) is _SHAPE_FORMULA else None
        self.calls = 0  # while listing, for ops with no formula


_SHAPE_FORMULA = flop_counter.shape_wrapper(lambda: 0).__code__


def _shape_key(value):
    """``value`` with tensors replaced by their shapes (what a shape formula sees), as a hashable key."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (list, tuple)):
        return (type(value), *map(_shape_key, value))
    if isinstance(value, dict):
        return (dict, *((k, _shape_key(v)) for k, v in value.items()))
    return value if value is None else (type(value), value)


if _Inner is not None:

    class _Dispatch(_Inner):
        """``_FlopCounterMode`` that runs ops with nothing to decompose directly (same counts, fewer mode
        switches), looks each op up once, by identity, instead of hashing it on every call, and on meta
        hands reusable ops to the counter's cache."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counter = self.counter
            if counter.guard is not None:  # preserved_state's copy-on-write watches writes through this mode
                counter.guard.before(func, args, kwargs)
            op = counter.ops.get(id(func))
            if op is None:
                op = counter.learn(func)
            if not op.direct:
                return super().__torch_dispatch__(func, types, args, kwargs)
            if op.reusable:
                return counter.reuse(op, args, kwargs)
            if op.in_place and in_place_on_cpu(func, args, kwargs):
                out = args[0]
            else:
                out = func(*args, **kwargs) if kwargs else func(*args)
            counter.count(op, out, args, kwargs)
            return out


def _runs_directly(func) -> bool:
    """An op _FlopCounterMode would only run and count: no decomposition to try, nothing handed back. The
    normalizations run whole although torch registers Python decompositions for them: they have no FLOP
    formula and neither have the pointwise ops they decompose into, so decomposing counts nothing more, while
    on meta it turned every batch norm into a dozen dispatched ops (a third of a small model's meta pass)."""
    if func in _NORMS:
        return True
    if not isinstance(func, torch._ops.OpOverload) or func._overloadpacket in _PASSED_BACK:
        return False
    try:
        decomposable = _CIA in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _CIA)
    except (AttributeError, RuntimeError):
        return False
    return not decomposable


class FlopCounter(FlopCounterMode):
    """``FlopCounterMode(display=False)`` that also records ops with no FLOP formula.

    >>> with FlopCounter() as counter:
    ...     model(x)
    >>> counter.get_total_flops(), counter.uncounted_ops()
    """

    #: does the counter hand every op to the write guard of the ``preserved_state`` it runs in? (Not on a torch
    #: without ``_FlopCounterMode``, where the stock mode dispatches: the guard then pushes a mode of its own.)
    watches_writes = _Inner is not None

    def __init__(self, *, reuse_meta: bool = False) -> None:
        super().__init__(display=False, depth=None, custom_mapping=EXTRA_FORMULAS)
        self.ops: dict[int, _Op] = {}
        self.reuse_meta = reuse_meta
        self.meta_cache: MetaResultCache | None = None
        self.uncounted: Counter = Counter()  # ops that reached _count_flops (the stock mode's route)
        self.listing = True
        self.guard = None  # the write guard of the pass (``watches_writes``), found on entry
        if hasattr(self, "mod_tracker"):
            self.mod_tracker = _Tracker()

    def __enter__(self):
        self.uncounted.clear()
        self.ops.clear()
        if _Inner is None or not hasattr(self, "mode"):
            return super().__enter__()
        self.flop_counts.clear()
        self.meta_cache = MetaResultCache() if self.reuse_meta else None
        self.mod_tracker.__enter__()
        self.guard = write_guard.current()
        self.mode = _Dispatch(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.guard = None
        return super().__exit__(*exc)

    def learn(self, func) -> _Op:
        packet = getattr(func, "_overloadpacket", None)
        direct = _runs_directly(func)
        on_meta = direct and self.meta_cache is not None
        reusable = on_meta and can_cache(func)
        in_place = on_meta and not reusable and can_stand_in_place(func)
        op = self.ops[id(func)] = _Op(func, self.flop_registry.get(packet), direct, reusable, in_place)
        return op

    def count(self, op: _Op, out, args, kwargs) -> None:
        """Count one call that ran."""
        self._add(op, self._flops(op, out, args, kwargs) if op.formula is not None else 0)

    def _add(self, op: _Op, flops: int) -> None:
        if op.formula is not None:
            self.flop_counts["Global"][op.packet] += flops
        elif self.listing:
            op.calls += 1

    def reuse(self, op: _Op, args, kwargs):
        """Run and count one call of a reusable op: from the meta cache when an identical call was seen."""
        cache = self.meta_cache
        key = cache.key(id(op.func), args, kwargs)
        entry = cache.entries.get(key) if key is not None else None
        if entry is None:
            out = compute(op.func, args, kwargs, op.stand_in and key is not None)
            flops = self._flops(op, out, args, kwargs) if op.formula is not None else 0
            if key is not None and not cache.remember(key, args, kwargs, out, flops):
                op.reusable = False  # one result it could not reproduce: stop keying this op's calls
        else:
            out, flops = cache.replay(entry), entry.flops
        self._add(op, flops)
        return out

    def _flops(self, op: _Op, out, args, kwargs) -> int:
        """The op's formula on this call (evaluated once per distinct set of shapes for shape formulas)."""
        key = flops = None
        if op.by_shape is not None:
            try:
                key = (_shape_key(args), _shape_key(kwargs) if kwargs else None, _shape_key(out))
                flops = op.by_shape.get(key)
            except TypeError:  # something unhashable (e.g. symbolic sizes): just evaluate the formula
                key = None
        if flops is None:
            flops = op.formula(*args, **(kwargs or {}), out_val=out)
            if key is not None:
                op.by_shape[key] = flops
        return flops

    def get_total_flops(self) -> int:
        # .get, not [...]: creating the "Global" entry before a torch.cond would make the branches share it
        # (FlopCounterMode checkpoints flop_counts with a shallow copy) and count both branches.
        return sum(self.flop_counts.get("Global", {}).values())

    def _count_flops(self, func_packet, out, args, kwargs):
        """The stock mode's route (ops it decomposed, or every op on a torch without ``_FlopCounterMode``)."""
        if func_packet not in self.flop_registry:  # most ops: nothing for FlopCounterMode to add
            if self.listing:
                self.uncounted[func_packet] += 1
            return out
        return super()._count_flops(func_packet, out, args, kwargs)

    @contextlib.contextmanager
    def unlisted(self) -> Iterator[None]:
        """Ops run by modscope itself (e.g. making stand-in tensors) are not listed as the model's."""
        self.listing = False
        try:
            yield
        finally:
            self.listing = True

    def uncounted_ops(self) -> dict[str, int] | None:
        """{"aten.relu": calls, ...} for ops that ran with no formula, most frequent first; views left out."""
        if not CAN_LIST_UNCOUNTED:
            return None
        counts = Counter()
        calls = [(op.packet, op.calls) for op in self.ops.values() if op.calls]
        for packet, n in [*calls, *self.uncounted.items()]:
            if not _is_view(packet):
                counts[str(packet)] += n
        return dict(counts.most_common())


def missed_ops(uncounted: dict[str, int] | None) -> tuple[str, ...]:
    """The uncounted ops that do multiply-adds (``MULTIPLY_ADD_OPS``): with any, the FLOP total is a lower bound."""
    return tuple(name for name in (uncounted or {}) if name in MULTIPLY_ADD_OPS)


def _is_view(packet) -> bool:
    """True when every result of the op aliases an input without writing to it (view, transpose, ...)."""
    try:
        schema = getattr(packet, packet.overloads()[0])._schema
    except (AttributeError, IndexError, RuntimeError):
        return False
    returns = schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
