"""FLOPs from PyTorch's own ``FlopCounterMode``, plus the ops it ran without a formula.

``FlopCounterMode`` counts matmuls, convolutions and attention (2 FLOPs per multiply-add) and silently counts
every other op as zero. ``FlopCounter`` is the same counter with the same formulas and totals that also
remembers those other ops, so reports can say what was *not* counted. Views (reshape, transpose, ...) do no
arithmetic and are left out of that list.

Two pieces of ``FlopCounterMode`` are dropped because modscope does not need them and they cost time on
every op: its ``ModuleTracker`` (modscope attributes FLOPs to modules with its own hooks, reading the total
on entry and exit) and, for ops that have no formula and no CompositeImplicitAutograd kernel, the attempt to
decompose them, which always returns NotImplemented for such ops. Both are guarded: on a torch whose
internals differ, the stock ``FlopCounterMode`` runs unchanged.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

#: False on a torch whose FlopCounterMode routes counting differently; reports then say "unknown".
CAN_LIST_UNCOUNTED = callable(getattr(FlopCounterMode, "_count_flops", None))

_Inner = getattr(flop_counter, "_FlopCounterMode", None)
_CIA = torch._C.DispatchKey.CompositeImplicitAutograd
# Ops that _FlopCounterMode hands back (NotImplemented) untouched: they must keep going through it.
_PASSED_BACK = {
    getattr(getattr(torch.ops, ns), op, None)
    for ns, op in (("aten", "sym_is_contiguous"), ("aten", "is_contiguous"), ("aten", "is_strides_like_format"),
                   ("aten", "is_non_overlapping_and_dense"), ("aten", "size"), ("aten", "sym_size"), ("aten", "stride"),
                   ("aten", "sym_stride"), ("aten", "storage_offset"), ("aten", "sym_storage_offset"),
                   ("aten", "numel"), ("aten", "sym_numel"), ("aten", "dim"), ("prim", "layout"))
}


class _Tracker:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP goes to "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


if _Inner is not None:

    class _Dispatch(_Inner):
        """``_FlopCounterMode`` that skips the no-op decompose attempt (same counts, fewer mode switches)."""

        def __init__(self, counter):
            super().__init__(counter)
            self._direct: dict = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            direct = self._direct.get(func)
            if direct is None:
                direct = self._direct[func] = self._runs_directly(func)
            if direct:
                kwargs = kwargs if kwargs else {}
                out = func(*args, **kwargs)
                return self.counter._count_flops(func._overloadpacket, out, args, kwargs)
            return super().__torch_dispatch__(func, types, args, kwargs)

        def _runs_directly(self, func) -> bool:
            if not isinstance(func, torch._ops.OpOverload) or func in self.counter.flop_registry:
                return False
            if func._overloadpacket in _PASSED_BACK:
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

    def __init__(self) -> None:
        super().__init__(display=False, depth=None)
        self.uncounted: Counter = Counter()
        self._listing = True
        if hasattr(self, "mod_tracker"):
            self.mod_tracker = _Tracker()

    def __enter__(self):
        self.uncounted.clear()
        if _Inner is None or not hasattr(self, "mode"):
            return super().__enter__()
        self.flop_counts.clear()
        self.mod_tracker.__enter__()
        self.mode = _Dispatch(self)
        self.mode.__enter__()
        return self

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet not in self.flop_registry:  # most ops: nothing for FlopCounterMode to add
            if self._listing:
                self.uncounted[func_packet] += 1
            return out
        return super()._count_flops(func_packet, out, args, kwargs)

    @contextlib.contextmanager
    def unlisted(self) -> Iterator[None]:
        """Ops run by modscope itself (e.g. making stand-in tensors) are not listed as the model's."""
        self._listing = False
        try:
            yield
        finally:
            self._listing = True

    def uncounted_ops(self) -> dict[str, int] | None:
        """{"aten.relu": calls, ...} for ops that ran with no formula, most frequent first; views left out."""
        if not CAN_LIST_UNCOUNTED:
            return None
        counts = Counter()
        for packet, calls in self.uncounted.items():
            if not _is_view(packet):
                counts[str(packet)] += calls
        return dict(counts.most_common())


def _is_view(packet) -> bool:
    """True when every result of the op aliases an input without writing to it (view, transpose, ...)."""
    try:
        schema = getattr(packet, packet.overloads()[0])._schema
    except (AttributeError, IndexError, RuntimeError):
        return False
    returns = schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
