"""Gradient flow after one forward, loss and backward pass: which parameters get no gradient, a zero, vanishing,
exploding or non-finite one.

The backward pass uses ``torch.autograd.grad``, so the parameters' ``.grad`` are never written to; everything
else the pass could disturb (modes, BatchNorm statistics, RNG) is restored by ``preserved_state``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
import torch.nn as nn

from modscope.collect.hooks import preserved_state
from modscope.collect.recursion import recursion_note, recursion_room
from modscope.collect.static.tensors import collect_tensors
from modscope.collect.training.loss import Loss, LossKind, loss_label, make_loss
from modscope.collect.training.scalars import host_floats
from modscope.core.walk import copy_if_lazy, visits
from modscope.errors import ForwardError, UsageError
from modscope.load.inputs import as_model_inputs
from modscope.load.input_errors import explain
from modscope.reports.grads import GradReport, GradStatus, GradThresholds, ModuleGrad, ParamGrad, worst
from modscope.reports.static import ModelRef, TensorInfo


def classify(norm: float | None, thresholds: GradThresholds, *, finite: bool | None = None) -> GradStatus:
    """Verdict for a trainable parameter whose gradient has L2 norm ``norm`` (None: no gradient).

    ``finite`` overrides the finiteness test when the caller knows it exactly (a float32 norm also overflows
    for gradients above ~1e19, which then count as non-finite).
    """
    if norm is None:
        return GradStatus.NO_GRAD
    if not (math.isfinite(norm) if finite is None else finite):
        return GradStatus.NONFINITE
    if norm == 0.0:
        return GradStatus.ZERO
    if norm > thresholds.exploding:
        return GradStatus.EXPLODING
    if norm < thresholds.vanishing:
        return GradStatus.VANISHING
    return GradStatus.OK


def grads(
    model: nn.Module,
    inputs: Any,
    *,
    loss: Loss = LossKind.MEAN,
    target: torch.Tensor | None = None,
    thresholds: GradThresholds | None = None,
    name: str | None = None,
) -> GradReport:
    """Run ``model(inputs)``, reduce the output to a loss and report every parameter's gradient.

    ``inputs``: a tensor, tuple (positional), dict (keyword) or ``ModelInputs``. ``loss``: "sum", "mean",
    "cross-entropy" (``target``: class indices; random ones when omitted) or a function of the output that
    returns a scalar tensor. ``.grad`` is left untouched.

    >>> report = modscope.grads(model, torch.randn(8, 3, 32, 32), loss="cross-entropy")
    >>> [p.name for p in report.problems]      # trainable parameters with no_grad / zero / nonfinite
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}")
    thresholds = thresholds or GradThresholds()
    inputs = as_model_inputs(inputs)
    model = copy_if_lazy(model)  # a lazy model's first forward would materialise it in place
    visited = visits(model)
    depth = max(v.depth for v in visited)
    with preserved_state(model, modules=[v.module for v in visited if v.first]), torch.enable_grad(), \
            recursion_room(depth):
        try:
            output = inputs.call(model)
        except Exception as exc:
            note = recursion_note(exc, depth)
            raise ForwardError(f"the model's forward raised {explain(exc, model)}{note}") from exc
        loss_tensor = make_loss(output, loss, target)
        collected = collect_tensors(visited)
        infos = [p for p in collected.parameters if p.initialized]
        trainable = [p for p in infos if p.requires_grad]
        tensors = [collected.objects[p.name] for p in trainable]
        gradients: list[torch.Tensor | None] = [None] * len(tensors)
        if loss_tensor is not None and loss_tensor.requires_grad and tensors:
            gradients = list(torch.autograd.grad(loss_tensor, tensors, allow_unused=True))
        loss_value = None if loss_tensor is None else float(loss_tensor.detach())
        stats = _gradient_stats(tensors, gradients)
        by_name = {p.name: stats[i] for i, p in enumerate(trainable) if i in stats}
    records = [_record(p, by_name.get(p.name), thresholds) for p in infos]
    types = {v.name: type(v.module).__name__ for v in visited if v.first}
    return GradReport(
        model=ModelRef(type(model).__name__, name),
        loss=loss_label(loss),
        loss_value=loss_value,
        thresholds=thresholds,
        params=tuple(records),
        modules=tuple(_module_aggregates(records, types)),
    )


def _gradient_stats(tensors, gradients) -> dict:
    """index -> (norm, max_abs, mean_abs, weight norm) for each gradient present; one host transfer per device."""
    present = [i for i, g in enumerate(gradients) if g is not None]
    scalars: list[torch.Tensor] = []
    for i in present:
        g = gradients[i].detach()
        values = (g.coalesce().values() if g.is_sparse else g).float().abs()  # sparse: the stored entries
        empty = values.numel() == 0
        scalars += [
            torch.linalg.vector_norm(values),
            values.new_zeros(()) if empty else values.amax(),
            values.sum() / max(g.numel(), 1),
            torch.linalg.vector_norm(tensors[i].detach().float()),
        ]
    values = host_floats(scalars)
    return {i: tuple(values[4 * k : 4 * k + 4]) for k, i in enumerate(present)}


def _record(info: TensorInfo, stats, thresholds: GradThresholds) -> ParamGrad:
    base = dict(
        name=info.name,
        module=info.module,
        shape=tuple(info.shape),
        numel=info.numel or 0,
        requires_grad=info.requires_grad,
        shared_with=info.shared_with,
    )
    if not info.requires_grad:
        return ParamGrad(**base, status=GradStatus.FROZEN)
    if stats is None:
        return ParamGrad(**base, status=GradStatus.NO_GRAD)
    norm, max_abs, mean_abs, weight_norm = stats
    ratio = norm / weight_norm if weight_norm else None
    status = classify(norm, thresholds, finite=math.isfinite(max_abs))
    return ParamGrad(**base, status=status, norm=norm, max_abs=max_abs, mean_abs=mean_abs,
                     weight_norm=weight_norm, ratio=ratio)


def _module_aggregates(records: list[ParamGrad], types: dict[str, str]) -> list[ModuleGrad]:
    """One entry per module that owns parameters directly, in pre-order."""
    owned: dict[str, list[ParamGrad]] = defaultdict(list)
    for r in records:
        owned[r.module].append(r)
    out = []
    for name, params in owned.items():
        with_grad = [p for p in params if p.norm is not None]
        numel = sum(p.numel for p in with_grad)
        out.append(ModuleGrad(
            name=name,
            type=types.get(name, "?"),
            params=len(params),
            trainable=sum(p.requires_grad for p in params),
            status=worst(p.status for p in params),
            norm=math.sqrt(sum(p.norm**2 for p in with_grad)) if with_grad else None,
            mean_abs=sum(p.mean_abs * p.numel for p in with_grad) / numel if numel else None,
            max_abs=max(p.max_abs for p in with_grad) if with_grad else None,
        ))
    return out
