"""Per-layer forward and backward time: self (excluding child modules) and total, median and p90 over repeats.

Forward: a pre-hook and a post-hook per module take a clock mark each. Backward: tensor hooks (never full
backward module hooks, which break on in-place ops) mark when the gradient reaches a module's outputs (its
backward starts) and when the gradients of its inputs and parameters are ready (it ends). On CUDA the marks
are events, and the GPU is synchronised once per iteration, never per module. Whole passes are also timed
without any hook, so the report shows how closely the per-layer sum matches an unhooked run.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from modscope.collect.forward.structure import iter_tensors
from modscope.collect.graph_release import graph_nodes, release
from modscope.collect.hooks import module_hooks, preserved_state
from modscope.collect.recursion import recursion_room
from modscope.collect.static.tensors import trainable_parameters
from modscope.collect.training.clocks import QueueAhead, clock_for, resolve_device
from modscope.collect.training.kernel_clock import KernelClock, KernelTraceError, unusable_reason
from modscope.collect.training.loss import Loss, LossKind, loss_kind, make_loss
from modscope.core.walk import copy_if_lazy, move, visits
from modscope.errors import ForwardError, UsageError
from modscope.load.inputs import as_model_inputs
from modscope.load.input_errors import explain
from modscope.reports.static import ModelRef
from modscope.reports.timing import LayerTiming, PassTiming, TimeStat, TimingReport


def time_layers(
    model: nn.Module,
    inputs: Any,
    *,
    device: str | torch.device | None = None,
    backward: bool = False,
    warmup: int = 3,
    repeat: int = 10,
    loss: Loss = LossKind.MEAN,
    target: torch.Tensor | None = None,
    name: str | None = None,
    clock: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> TimingReport:
    """Time every module of ``model`` on ``inputs`` (moved with the model to ``device`` for the run only).

    ``progress(done, total)`` is called after each of the ``warmup + repeat`` iterations.

    >>> report = modscope.time_layers(model, torch.randn(8, 3, 224, 224), backward=True)
    >>> [(t.name, t.forward_self.median) for t in report.layers[:5]]      # slowest first, nanoseconds

    ``clock``: on CUDA, ``"auto"`` times layers from CUPTI's kernel timestamps (nothing added to the stream)
    where torch's profiler can trace kernels, else with CUDA events; ``"events"`` always with events.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if warmup < 0 or repeat < 1:
        raise UsageError("--warmup must be >= 0 and --repeat >= 1")
    if clock not in ("auto", "events"):
        raise UsageError(f"--clock {clock!r}: use auto or events")
    kind = loss_kind(loss)
    model = copy_if_lazy(model)  # a lazy model's first forward would materialise it in place
    home = next((t.device for v in visits(model) for t in (*v.module._parameters.values(), *v.module._buffers.values())
                 if t is not None), torch.device("cpu"))
    device = resolve_device(device, home)
    depth = max(v.depth for v in visits(model))
    with preserved_state(model, rng_devices=(device,)), torch.enable_grad(), recursion_room(depth):
        move(model, device)
        run = _Runner(model, as_model_inputs(inputs).to(device), clock_for(device), backward, kind, target)
        note = None
        if device.type == "cuda":
            reason = "asked for" if clock == "events" else unusable_reason()
            note = None if reason is None else f"CUDA events: {reason}"
        if device.type == "cuda" and note is None:
            try:
                return _measure(run, model, name, device, KernelClock(run.clock), warmup, repeat, backward, None,
                                progress)
            except KernelTraceError as why:
                note = f"CUDA events: {why}"
                run.holds = QueueAhead(run.clock)
        return _measure(run, model, name, device, run.clock, warmup, repeat, backward, note, progress)


def _measure(run, model, name, device, clock, warmup, repeat, backward, note, progress) -> TimingReport:
    """Unhooked passes timed on ``run``'s clock and hooked ones on ``clock``, in turns."""
    timer = _LayerTimer(model, clock, backward, run.holds)
    bare, hooked, held = [], [], []
    for i in range(warmup + repeat):  # unhooked and hooked iterations take turns: drifts hit both
        if i == warmup:
            timer.drop_warmup()
        bare.append(run())
        held.append(run.holds.held)
        with timer.hooks():
            hooked.append(run(timer))
        held.append(run.holds.held)
        if progress is not None:
            progress(i + 1, warmup + repeat)
    bare, hooked, held = bare[warmup:], hooked[warmup:], held[2 * warmup:]
    return _report(model, name, device, clock, warmup, repeat, backward, bare, hooked, timer, held, note)


class _Runner:
    """Runs one iteration (forward, then loss and backward when asked) and returns its pass times."""

    def __init__(self, model, inputs, clock, backward: bool, loss: Loss, target):
        self.model, self.inputs, self.clock = model, inputs, clock
        self.backward, self.loss, self.target = backward, loss, target
        self.holds = QueueAhead(clock)
        self.params = [tensor for _, tensor in trainable_parameters(model)]
        if backward and not self.params:
            raise UsageError("--backward needs trainable parameters, and every parameter is frozen")

    def __call__(self, timer: "_LayerTimer | None" = None) -> tuple[float, float | None]:
        """(forward ns, backward ns or None) of one iteration, with ``timer``'s hooks recording (on its clock)
        if given."""
        clock = self.clock if timer is None else timer.clock
        clock.reset()
        try:
            return self._iteration(clock, timer)
        finally:
            clock.close()

    def _iteration(self, clock, timer):
        if timer is not None:
            timer.begin()
        hooked = timer is not None
        holds = self.holds
        holds.begin(clock)
        holds.start((hooked, "forward"))
        start = clock.mark()
        try:
            output = self.inputs.call(self.model)
        except Exception as exc:
            holds.done()
            raise ForwardError(f"the model's forward raised {explain(exc, self.model)}") from exc
        middle = clock.mark()
        holds.done()
        backward_time = None
        if self.backward:
            loss = make_loss(output, self.loss, self.target)
            if loss is None or not loss.requires_grad:
                raise UsageError("--backward: the model's output carries no gradient")
            if timer is not None:
                timer.prepare_backward()
            holds.start((hooked, "backward"))
            begin = clock.mark()
            torch.autograd.grad(loss, self.params, allow_unused=True)
            end = clock.mark()
            holds.done()
            nodes = graph_nodes((output, loss))  # hooks looked at this graph: free it node by node
            del output, loss
            release(nodes)
        clock.sync()  # once per iteration
        holds.settle()
        since = partial(clock.since, start)
        if self.backward:
            backward_time = since(end) - since(begin) - holds.held_inside(since, since(begin), since(end))
        if timer is not None:
            timer.finish(start)
        return since(middle) - holds.held_inside(since, 0.0, since(middle)), backward_time


@dataclass
class _Call:
    module: str
    parent: int | None
    start: Any = None
    end: Any = None
    seq: int = -1  # autograd nodes created inside this call have larger sequence numbers
    heads: list = field(default_factory=list)  # autograd nodes that produced the call's outputs
    grad_in: list = field(default_factory=list)  # marks: the gradient reached the call's outputs
    grad_out: list = field(default_factory=list)  # marks: the call's first ops finished in backward


class _LayerTimer:
    """Hooks that mark module calls; ``finish`` turns one iteration's marks into per-module times.

    Backward spans come from the autograd graph rather than tensor hooks: a call's nodes are those reachable
    from its outputs and created after it began (autograd sequence numbers grow in creation order). Its
    backward starts when its output nodes are about to run and ends when its earliest nodes (whose inputs come
    from outside the call) have run, so a residual branch waiting on another does not stretch the span.
    Node hooks live on nodes of this iteration's graph only and are freed with it.
    """

    def __init__(self, model: nn.Module, clock, backward: bool, holds):
        self.model, self.clock, self.backward, self.holds = model, clock, backward, holds
        firsts = [v for v in visits(model) if v.first]
        self.modules = [(v.name, v.module) for v in firsts]
        self.types = {v.name: type(v.module).__name__ for v in firsts}
        self.calls: list[_Call] = []
        self.open: list[int] = []
        self._probe = torch.zeros((), requires_grad=True)
        # per module name: one value per timed iteration
        self.samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.counts: dict[str, int] = {}

    def hooks(self):
        """Module hooks, removed when the returned context manager exits."""
        return module_hooks(self.model, pre=self._pre, post=self._post, modules=self.modules)

    def begin(self) -> None:
        self.calls, self.open = [], []

    def _pre(self, name, module, args, kwargs) -> None:
        call = _Call(name, self.open[-1] if self.open else None)
        self.open.append(len(self.calls))
        self.calls.append(call)
        if self.backward and torch.is_grad_enabled():
            call.seq = (self._probe * 1).grad_fn._sequence_nr()
        call.start = self._mark()  # last, so the hook's own work is not counted

    def _post(self, name, module, args, kwargs, output, error) -> None:
        end = self._mark()  # first, for the same reason
        call = self.calls[self.open.pop()]
        call.end = end
        if call.seq >= 0 and output is not None:
            call.heads = [t.grad_fn for t in iter_tensors(output, limit=None) if t.grad_fn is not None]

    def prepare_backward(self) -> None:
        """Between forward and backward: hook each call's output nodes and earliest nodes."""
        for call in self.calls:
            heads = [n for n in call.heads if call.seq < _seq(n)]
            for node in {id(n): n for n in heads}.values():
                node.register_prehook(partial(self._grad_arrived, call))
            for node in _earliest_nodes(heads, call.seq):
                node.register_hook(partial(self._node_done, call))
            call.heads = []

    def _grad_arrived(self, call: _Call, grad_outputs) -> None:
        call.grad_in.append(self._mark())

    def _node_done(self, call: _Call, grad_inputs, grad_outputs) -> None:
        call.grad_out.append(self._mark())

    def _mark(self):
        self.holds.tick()  # on a GPU, maybe a wait for the next stretch of the pass (QueueAhead)
        return self.clock.mark()

    def finish(self, start) -> None:
        """After the iteration's sync: self/total times per module, summed over its calls, without the GPU
        waits that fell inside them."""
        since = partial(self.clock.since, start)

        def span(begin: float, end: float) -> float:
            return end - begin - self.holds.held_inside(since, begin, end)

        fwd_total = [span(since(c.start), since(c.end)) for c in self.calls]
        bwd_total = [
            span(min(map(since, c.grad_in)), max(map(since, c.grad_out))) if c.grad_in and c.grad_out else None
            for c in self.calls
        ]
        fwd_self, bwd_self = list(fwd_total), list(bwd_total)
        for c, total_f, total_b in zip(self.calls, fwd_total, bwd_total):
            if c.parent is not None:
                fwd_self[c.parent] -= total_f
                if total_b is not None and bwd_self[c.parent] is not None:
                    bwd_self[c.parent] -= total_b
        per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[str, int] = defaultdict(int)
        for c, tf, sf, tb, sb in zip(self.calls, fwd_total, fwd_self, bwd_total, bwd_self):
            counts[c.module] += 1
            per[c.module]["forward_total"] += tf
            per[c.module]["forward_self"] += max(sf, 0.0)
            if tb is not None:
                per[c.module]["backward_total"] += tb
                per[c.module]["backward_self"] += max(sb, 0.0)
        for module, values in per.items():
            for key, value in values.items():
                self.samples[module][key].append(value)
        self.counts = dict(counts)

    def drop_warmup(self) -> None:
        self.samples.clear()


def _seq(node) -> int:
    """Creation order of an autograd node; AccumulateGrad (a parameter's) counts as outside every call."""
    seq = node._sequence_nr()
    return -1 if seq >= 2**63 else seq


def _earliest_nodes(heads: list, floor: int) -> list:
    """Nodes created after ``floor`` and reachable from ``heads`` whose inputs include one from outside."""
    seen: dict[int, Any] = {}
    stack = list(heads)
    earliest = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        inside = [n for n, _ in node.next_functions if n is not None and _seq(n) > floor]
        if len(inside) < sum(1 for n, _ in node.next_functions if n is not None) or not inside:
            earliest.append(node)
        stack.extend(inside)
    return earliest


def _stat(values: list[float]) -> TimeStat:
    ordered = sorted(values)
    return TimeStat(statistics.median(ordered), ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)])


def _report(model, name, device, clock, warmup, repeat, backward, bare, hooked, timer, held, note) -> TimingReport:
    layers = []
    for module, samples in timer.samples.items():
        layers.append((module, {key: _stat(values) for key, values in samples.items()}))
    forward_sum = sum(s["forward_self"].median for _, s in layers)
    backward_sum = sum(s["backward_self"].median for _, s in layers if "backward_self" in s)
    rows = []
    for module, s in layers:
        f_self, b_self = s["forward_self"], s.get("backward_self")
        rows.append(LayerTiming(
            name=module,
            type=timer.types.get(module, "?"),
            calls=timer.counts.get(module, 0),
            forward_self=f_self,
            forward_total=s["forward_total"],
            forward_share=f_self.median / forward_sum if forward_sum else 0.0,
            backward_self=b_self,
            backward_total=s.get("backward_total"),
            backward_share=None if b_self is None else (b_self.median / backward_sum if backward_sum else 0.0),
            below_resolution=f_self.median < clock.resolution_ns
            or (b_self is not None and b_self.median < clock.resolution_ns),
        ))
    rows.sort(key=lambda r: -(r.forward_self.median + (r.backward_self.median if r.backward_self else 0.0)))
    def share_held(name: str) -> float | None:  # held: per timed run, {pass name: queued behind a wait}
        return sum(h[name] for h in held) / len(held) if clock.holds else None

    forward = PassTiming(_stat([f for f, _ in bare]), _stat([f for f, _ in hooked]), forward_sum, share_held("forward"))
    backward_pass = None
    if backward:
        backward_pass = PassTiming(
            _stat([b for _, b in bare]), _stat([b for _, b in hooked]), backward_sum, share_held("backward")
        )
    return TimingReport(
        model=ModelRef(type(model).__name__, name),
        device=str(device),
        clock=clock.name,
        clock_note=note,
        resolution_ns=clock.resolution_ns,
        warmup=warmup,
        repeat=repeat,
        forward=forward,
        backward=backward_pass,
        layers=tuple(rows),
    )
