"""Gradient norms over a real training loop, without disturbing it.

A *step* is, by default, one backward pass that accumulates into at least one watched parameter: after it, the
watch reads the ``.grad`` of every parameter that pass reached (the gradient an optimizer would use if it
stepped now; with gradient accumulation, the running sum). With ``optimizer=`` a step is one
``optimizer.step()`` instead, and the watch reads the gradients that step is about to apply.

Hooks are ``register_post_accumulate_grad_hook`` on the parameters (or a step pre-hook on the optimizer), never
full backward module hooks, which break on in-place ops; they only read gradients. Norms are computed with one ``torch._foreach_norm`` call per step and stay on the device; they reach the host in batches
(every ``_FLUSH_EVERY`` steps and at ``report()``), so the watch adds no host synchronisation to a step.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from modscope.collect.static.tensors import collect_tensors
from modscope.collect.training.scalars import host_floats
from modscope.core.walk import visits
from modscope.errors import UsageError
from modscope.reports.grads import GradStatus, GradStep, GradThresholds, GradWatchReport, ParamGradStats
from modscope.reports.static import ModelRef

_FLUSH_EVERY = 64


def watch_gradients(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    thresholds: GradThresholds | None = None,
    name: str | None = None,
) -> "GradientWatch":
    """Record per-step gradient norms of ``model``'s trainable parameters while the ``with`` block runs.

    >>> with modscope.watch_gradients(model) as watch:
    ...     for x, y in loader:
    ...         loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
    >>> report = watch.report()        # per-step history, running min/mean/max norm per parameter
    >>> report.ok, [p.name for p in report.problems]
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return GradientWatch(model, optimizer=optimizer, thresholds=thresholds or GradThresholds(), name=name)


@dataclass
class _Running:
    """Running statistics of one parameter's gradient norm."""

    steps: int = 0
    zero: int = 0
    nonfinite: int = 0
    finite: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last_step: int = 0
    last: float | None = None

    def add(self, step: int, norm: float) -> None:
        self.steps += 1
        self.last_step, self.last = step, norm
        if not math.isfinite(norm):
            self.nonfinite += 1
            return
        self.finite += 1
        self.total += norm
        self.low, self.high = min(self.low, norm), max(self.high, norm)
        if norm == 0.0:
            self.zero += 1


@dataclass
class GradientWatch:
    """The live side of ``watch_gradients``: hooks while inside ``with``, then ``report()``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    thresholds: GradThresholds
    name: str | None = None
    _names: list[str] = field(default_factory=list)
    _modules: list[str] = field(default_factory=list)
    _params: list[torch.Tensor] = field(default_factory=list)
    _frozen: list = field(default_factory=list)
    _touched: list[int] = field(default_factory=list)
    _task: int | None = None  # the autograd graph task whose parameters are being collected
    _pending: list[tuple[int, list[int], torch.Tensor | list[torch.Tensor]]] = field(default_factory=list)
    _running: list[_Running] = field(default_factory=list)
    _steps: list[GradStep] = field(default_factory=list)
    _count: int = 0
    _stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "GradientWatch":
        if self._stack is not None or self._params or self._frozen:
            raise UsageError("a watch is entered once: call watch_gradients() again for another block")
        collected = collect_tensors(visits(self.model))
        for info in collected.parameters:
            if not info.initialized:
                continue
            if info.requires_grad:
                self._names.append(info.name)
                self._modules.append(info.module)
                self._params.append(collected.objects[info.name])
            else:
                self._frozen.append(info)
        self._running = [_Running() for _ in self._params]
        stack = contextlib.ExitStack()
        try:
            if self.optimizer is not None:
                stack.enter_context(self.optimizer.register_step_pre_hook(self._before_optimizer_step))
            else:
                for index, param in enumerate(self._params):
                    stack.enter_context(param.register_post_accumulate_grad_hook(self._accumulated(index)))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        self._touched.clear()

    @property
    def steps(self) -> int:
        """Number of steps recorded so far."""
        return self._count

    # --- hooks -------------------------------------------------------------------------------------------

    def _accumulated(self, index: int):
        def hook(_param: torch.Tensor) -> None:
            task = torch._C._current_graph_task_id()
            if task != self._task:  # the first parameter of this backward pass
                # (a pass that raised never ran its end callback: its parameters are dropped here)
                self._task, self._touched = task, []
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._touched.append(index)

        return hook

    def _end_of_backward(self) -> None:
        indices, self._touched, self._task = sorted(set(self._touched)), [], None
        self._record(indices)

    def _before_optimizer_step(self, _optimizer, _args, _kwargs) -> None:
        self._record([i for i, p in enumerate(self._params) if p.grad is not None])

    def _record(self, indices: list[int]) -> None:
        self._count += 1
        norms = _norms([self._params[i].grad for i in indices])
        self._pending.append((self._count, indices, norms))
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    # --- host side ---------------------------------------------------------------------------------------

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        flat = [n for _, _, norms in pending for n in (norms if isinstance(norms, list) else norms.unbind())]
        values = iter(host_floats(flat))
        for step, indices, _ in pending:
            step_norms = [next(values) for _ in indices]
            for i, norm in zip(indices, step_norms):
                self._running[i].add(step, norm)
            self._steps.append(self._summarise(step, indices, step_norms))

    def _summarise(self, step: int, indices: list[int], norms: list[float]) -> GradStep:
        finite = [(n, i) for n, i in zip(norms, indices) if math.isfinite(n)]
        top, top_index = max(finite, default=(0.0, None))
        return GradStep(
            step=step,
            total_norm=math.sqrt(sum(n * n for n, _ in finite)),
            max_norm=top,
            max_norm_param="" if top_index is None else self._names[top_index],
            with_grad=len(indices),
            no_grad=len(self._params) - len(indices),
            zero=sum(1 for n, _ in finite if n == 0.0),
            nonfinite=len(norms) - len(finite),
        )

    def report(self) -> GradWatchReport:
        """Everything recorded so far (callable inside or after the ``with`` block)."""
        self._flush()
        params = [self._stats(i) for i in range(len(self._params))]
        params += [
            ParamGradStats(f.name, f.module, f.numel or 0, False, GradStatus.FROZEN, 0, 0, 0, 0, None, None, None, None)
            for f in self._frozen
        ]
        return GradWatchReport(
            model=ModelRef(type(self.model).__name__, self.name),
            step_on="optimizer" if self.optimizer is not None else "backward",
            thresholds=self.thresholds,
            steps=tuple(self._steps),
            params=tuple(params),
        )

    def _stats(self, index: int) -> ParamGradStats:
        r = self._running[index]
        if r.nonfinite:
            status = GradStatus.NONFINITE
        elif r.steps == 0:
            status = GradStatus.NO_GRAD
        elif r.zero == r.steps:
            status = GradStatus.ZERO
        elif r.high > self.thresholds.exploding:  # exploded at least once
            status = GradStatus.EXPLODING
        elif r.high < self.thresholds.vanishing:  # never rose above the bound
            status = GradStatus.VANISHING
        else:
            status = GradStatus.OK
        return ParamGradStats(
            name=self._names[index],
            module=self._modules[index],
            numel=self._params[index].numel(),
            requires_grad=True,
            status=status,
            steps_with_grad=r.steps,
            no_grad_steps=self._count - r.steps,
            zero_steps=r.zero,
            nonfinite_steps=r.nonfinite,
            norm_min=r.low if r.finite else None,
            norm_mean=r.total / r.finite if r.finite else None,
            norm_max=r.high if r.finite else None,
            norm_last=r.last if r.last_step == self._count else None,
        )


def _norms(grads: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """float32 L2 norm of each gradient, computed on its device without synchronising."""
    dense = [g for g in grads if g.layout == torch.strided]
    if len(dense) == len(grads) and grads:
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        devices = {n.device for n in norms}
        return torch.stack(norms) if len(devices) == 1 else list(norms)
    return [torch.linalg.vector_norm((g.coalesce().values() if g.is_sparse else g).float()) for g in grads]
