"""One forward pass, recorded per module: calls, input/output shapes, output bytes, self and inclusive FLOPs.

Everything that touches the model happens inside ``preserved_state`` (modes, grads, devices, hooks, buffer
values and the RNG state come back as they were).
FLOPs come from one ``FlopCounter`` around the whole pass; the module hooks only read its running total
on entry and exit, so a module's inclusive FLOPs are "total at exit - total at entry" and its self FLOPs
subtract what its submodules' calls added.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from modscope.collect.forward.flops import FlopCounter
from modscope.collect.forward.meta_stand_ins import MetaResultMode
from modscope.collect.forward.structure import describe, iter_tensors, storage_bytes, storage_key
from modscope.collect.hooks import module_hooks, preserved_rng, preserved_state
from modscope.collect.recursion import recursion_room
from modscope.collect.static.tensors import dtype_name
from modscope.core.walk import set_training, visits
from modscope.load.inputs import ModelInputs
from modscope.reports.forward import CallShapes, ForwardFailure, ModuleForward

MAX_VARIANTS = 16


@dataclass
class PassResult:
    """What one pass left behind. ``error`` is the exception the model raised (None when it returned)."""

    modules: list[ModuleForward]
    inputs: CallShapes  # with ``output`` filled in when the pass returned
    output: Any
    error: BaseException | None
    failure: ForwardFailure | None
    failing_module: nn.Module | None
    flops_total: int | None
    uncounted_ops: dict[str, int] | None
    peak_call_bytes: int  # largest inputs+outputs (distinct storages) of one module call
    peak_call_by_dtype: dict[str, int] = field(default_factory=dict)  # that call's bytes, split by dtype
    never_called: list[str] = field(default_factory=list)
    depth: int = 0  # of the module tree (the recursion room the pass had)


@dataclass
class _Stats:
    calls: int = 0
    flops: int = 0
    self_flops: int = 0
    output_bytes: int = 0
    first: CallShapes | None = None
    first_count: int = 0
    variants: list = field(default_factory=list)  # [args, kwargs, output, count] lists
    open_calls: int = 0  # calls of this module now running (a module that calls itself has several)
    opening: bool = False  # the call whose shapes will be ``first`` has started and not yet returned
    deferred: list = field(default_factory=list)  # (call number, shapes) of calls that returned before it


@dataclass
class _Frame:
    name: str
    start: int
    args: Any
    kwargs: Any
    inputs: list[torch.Tensor]
    children: int = 0
    opens: bool = False  # this call's shapes become the module's ``first`` (the first call to start)
    seq: int = 0  # the module's call number (calls of a module that calls itself return in reverse order)


class _Recorder:
    """The pre/post hooks: a stack of open module calls and per-module statistics."""

    def __init__(self, names: list[str], counter: FlopCounter | None, peak: bool = True):
        self.stats = {name: _Stats() for name in names}
        self.counter = counter
        self.track_peak = peak
        self.stack: list[_Frame] = []
        self.error: tuple[BaseException, ForwardFailure, nn.Module] | None = None
        self.peak = 0
        self.peak_by_dtype: dict[str, int] = {}

    def _flops(self) -> int:
        return self.counter.get_total_flops() if self.counter is not None else 0

    def pre(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        stats = self.stats[name]
        stats.calls += 1
        stats.open_calls += 1
        inputs = list(iter_tensors((args, kwargs))) if self.track_peak else []
        frame = _Frame(name, self._flops(), describe(args), describe(kwargs) if kwargs else {}, inputs)
        frame.seq = stats.calls
        if stats.first is None and not stats.opening:
            frame.opens = stats.opening = True
        self.stack.append(frame)

    def post(self, name: str, module: nn.Module, args, kwargs, output, error: BaseException | None) -> None:
        frame = self.stack.pop() if self.stack else None
        while frame is not None and frame.name != name and self.stack:
            self._close(frame, failed=True)  # a pre-hook of an inner module ran without its post-hook
            frame = self.stack.pop()
        if frame is None or frame.name != name:
            return
        stats = self.stats[name]
        spent = self._flops() - frame.start
        self._close(frame, failed=error is not None)
        if stats.open_calls == 0:  # the outermost call of a module that calls itself: inner calls are inside it
            stats.flops += spent
        stats.self_flops += spent - frame.children
        if self.stack:
            self.stack[-1].children += spent
        if error is not None:
            if self.error is None or self.error[0] is not error:  # innermost module of this exception
                failure = ForwardFailure(
                    name, type(module).__name__, type(error).__name__, str(error), CallShapes(frame.args, frame.kwargs, None)
                )
                self.error = (error, failure, module)
            return
        outputs = list(iter_tensors(output))
        stats.output_bytes += sum(t.numel() * t.element_size() for t in {id(t): t for t in outputs}.values())
        if self.track_peak:
            self.note_peak(_distinct_by_dtype(frame.inputs + outputs))
        shapes = (frame.args, frame.kwargs, describe(output))
        if frame.opens:  # the first call to start is ``first``; re-entrant calls that returned before it follow
            stats.first = CallShapes(*shapes)
            self._remember_shapes(stats, *shapes)
            self._flush(stats)
        elif stats.first is None:
            stats.deferred.append((frame.seq, shapes))
        else:
            self._remember_shapes(stats, *shapes)

    def _close(self, frame: _Frame, *, failed: bool) -> None:
        """A call of ``frame``'s module ended (returned, or raised or lost its post-hook: ``failed``)."""
        stats = self.stats[frame.name]
        stats.open_calls -= 1
        if failed and frame.opens:  # the next call to start opens instead
            stats.opening = False
            self._flush(stats)

    def _flush(self, stats: _Stats) -> None:
        """Record the shapes of re-entrant calls that returned before the opening call, in call order."""
        for _, shapes in sorted(stats.deferred, key=lambda item: item[0]):
            self._remember_shapes(stats, *shapes)
        stats.deferred.clear()

    def note_peak(self, by_dtype: dict[str, int]) -> None:
        total = sum(by_dtype.values())
        if total > self.peak:
            self.peak, self.peak_by_dtype = total, by_dtype

    @staticmethod
    def _remember_shapes(stats: _Stats, args, kwargs, output) -> None:
        if stats.first is None:
            stats.first = CallShapes(args, kwargs, output)
        first = stats.first
        if first.args == args and first.kwargs == kwargs and first.output == output:
            stats.first_count += 1
            return
        for variant in stats.variants:
            if variant[0] == args and variant[1] == kwargs and variant[2] == output:
                variant[3] += 1
                return
        if len(stats.variants) < MAX_VARIANTS:
            stats.variants.append([args, kwargs, output, 1])

    def modules(self, flops: bool) -> list[ModuleForward]:
        out = []
        for name, s in self.stats.items():
            first = s.first
            if first is not None:
                first = CallShapes(first.args, first.kwargs, first.output, s.first_count)
            out.append(
                ModuleForward(
                    name=name,
                    calls=s.calls,
                    first=first,
                    flops=s.flops if flops else None,
                    self_flops=s.self_flops if flops else None,
                    output_bytes=s.output_bytes,
                    variants=tuple(CallShapes(a, k, o, n) for a, k, o, n in s.variants),
                )
            )
        return out


def _whole_call_by_dtype(inputs: ModelInputs, output) -> dict[str, int]:
    """The model's own inputs+outputs (what the per-module maximum is when no hooks could be placed)."""
    return _distinct_by_dtype([*iter_tensors((inputs.args, inputs.kwargs)), *iter_tensors(output)])


def _distinct_by_dtype(tensors: list[torch.Tensor]) -> dict[str, int]:
    """Bytes of the distinct storages behind ``tensors``, by dtype name."""
    seen = {}
    for t in tensors:
        seen.setdefault(storage_key(t), t)
    by_dtype: dict[str, int] = {}
    for t in seen.values():
        name = dtype_name(t.dtype)
        by_dtype[name] = by_dtype.get(name, 0) + storage_bytes(t)
    return by_dtype


def run_pass(
    model: nn.Module,
    inputs: ModelInputs,
    *,
    training: bool = False,
    grad: bool = False,
    flops: bool = True,
    record: bool = True,
    peak: bool = True,
    reuse_meta: bool = False,
    extra: Callable[[FlopCounter | None], contextlib.AbstractContextManager] | None = None,
    throwaway: bool = False,
) -> PassResult:
    """Call ``model`` once on ``inputs`` and record what every module did; never raises for the model's errors.

    ``training``/``grad``: train mode and autograd during the pass (eval and no_grad by default).
    ``extra``: a context manager factory entered inside the pass (saved-tensor hooks, meta fallbacks); it is
    given the pass's FlopCounter (or None). ``peak``: measure ``peak_call_bytes`` (0 when off).
    ``reuse_meta``: answer repeated meta-tensor ops from a cache (``modscope.collect.forward.meta_cache``) and
    small pointwise/norm ops from CPU stand-ins (``meta_stand_ins``), in the FlopCounter's dispatch mode or,
    without FLOPs, in a ``MetaResultMode``, which leaves ``torch.cond`` alone (a FlopCounterMode runs both
    branches). Passes without FLOPs and without ``reuse_meta`` run no mode at all.
    ``throwaway``: ``model`` is modscope's own copy, used for this pass only: its state is not put back (the
    random generators still are).
    """
    visited = visits(model)
    firsts = [(v.name, v.module) for v in visited if v.first]
    depth = max(v.depth for v in visited)
    counter = FlopCounter(reuse_meta=reuse_meta) if flops else None
    recorder = _Recorder([name for name, _ in firsts], counter, peak)
    output, error = None, None
    with contextlib.ExitStack() as stack:
        # preserved_state also forks the RNG: dropout leaves the user's stream alone; weights are copied only
        # if an op writes them (a pass that reads its weights, as nearly all do, copies none)
        if throwaway:
            stack.enter_context(preserved_rng())
        else:
            stack.enter_context(preserved_state(
                model, modules=[m for _, m in firsts], copy_on_write=True,
                ops_watched=counter is not None and counter.watches_writes,
            ))
        set_training(model, training, tree=[m for _, m in firsts])
        stack.enter_context(torch.set_grad_enabled(grad))
        if record:
            stack.enter_context(module_hooks(model, pre=recorder.pre, post=recorder.post, modules=firsts))
        if extra is not None:
            stack.enter_context(extra(counter))
        if counter is not None:
            stack.enter_context(counter)
        elif reuse_meta:
            stack.enter_context(MetaResultMode())
        stack.enter_context(recursion_room(depth))
        try:
            output = inputs.call(model)
        except Exception as exc:  # the user's model raised: report it, do not crash
            error = exc
    failure, failing = None, None
    if error is not None:
        failure, failing = _failure_for(error, recorder, firsts)
    modules = recorder.modules(flops) if record else []
    call = CallShapes(describe(inputs.args), describe(inputs.kwargs) if inputs.kwargs else {}, None)
    if error is None:
        call = CallShapes(call.args, call.kwargs, describe(output))
        if peak:
            recorder.note_peak(_whole_call_by_dtype(inputs, output))
    return PassResult(
        modules=modules,
        inputs=call,
        output=output,
        error=error,
        failure=failure,
        failing_module=failing,
        flops_total=counter.get_total_flops() if flops else None,
        uncounted_ops=counter.uncounted_ops() if flops else None,
        peak_call_bytes=recorder.peak,
        peak_call_by_dtype=recorder.peak_by_dtype,
        never_called=never_called(firsts, recorder.stats) if error is None and record else [],
        depth=depth,
    )


def _failure_for(error: BaseException, recorder: _Recorder, firsts) -> tuple[ForwardFailure, nn.Module]:
    """The innermost module whose forward raised ``error`` (or raised what ``error`` was chained from)."""
    chain, cause = set(), error
    while cause is not None and id(cause) not in chain:
        chain.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if recorder.error is not None and id(recorder.error[0]) in chain:
        return recorder.error[1], recorder.error[2]
    root = firsts[0][1]
    shapes = CallShapes((), {}, None)
    return ForwardFailure("", type(root).__name__, type(error).__name__, str(error), shapes), root


def never_called(firsts: list[tuple[str, nn.Module]], stats: dict[str, _Stats]) -> list[str]:
    """Top-most modules with a forward of their own that did not run (containers such as ModuleList have none)."""
    flagged: set[str] = set()
    out = []
    for name, module in firsts:
        if stats[name].calls or type(module).forward is nn.Module.forward:
            continue
        parent = name
        while parent:
            parent = parent.rpartition(".")[0]
            if parent in flagged:
                break
        else:
            flagged.add(name)
            out.append(name)
    return out
