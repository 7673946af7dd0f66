"""Assertions about a training step: every trainable parameter learns, nothing turns NaN/Inf.

Both run one forward, loss and backward pass through modscope's own analyses (``modscope.grads`` and
``modscope.find_nonfinite``), which use ``torch.autograd.grad``: ``.grad`` is never written, and modes,
buffers and the RNG state are restored.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from modscope.collect.training.grads import grads
from modscope.collect.training.nonfinite import find_nonfinite
from modscope.reports import GradStatus
from modscope.testing._compare import fail, plain_text

LossFn = Callable[[Any], torch.Tensor]

_WHY = {
    GradStatus.NO_GRAD: "no gradient reached it (not used in forward, or cut off by .detach() / torch.no_grad())",
    GradStatus.ZERO: "its gradient is exactly zero",
    GradStatus.NONFINITE: "its gradient holds NaN/Inf",
}


def assert_gradients_flow(
    model: nn.Module, inputs: Any, loss_fn: LossFn | None = None, *, allow: Iterable[str] = ()
) -> None:
    """One backward pass gives every trainable parameter a finite, non-zero gradient.

    ``loss_fn(output)`` returns the scalar to differentiate (default: the mean of every floating output).
    ``allow``: substrings of parameter names or module types that may go without a gradient (e.g. an
    auxiliary head this loss does not use). The forward runs in the model's current mode.

    >>> assert_gradients_flow(model.train(), images, lambda logits: F.cross_entropy(logits, labels))
    """
    __tracebackhide__ = True
    report = grads(model, inputs, loss="mean" if loss_fn is None else loss_fn)
    types = {m.name: m.type for m in report.modules}
    allow = tuple(a.lower() for a in allow)
    problems = [
        p for p in report.problems
        if not any(a in f"{p.name} {types.get(p.module, '')}".lower() for a in allow)
    ]  # fmt: skip
    if not problems:
        return
    trainable = sum(1 for p in report.params if p.requires_grad)
    loss = "no loss value" if report.loss_value is None else f"loss {report.loss} = {report.loss_value:.4g}"
    lines = [f"{p.name} ({types.get(p.module, '?')}, {p.numel:,} elements): {_WHY[p.status]}" for p in problems]
    if all(p.status is GradStatus.NO_GRAD for p in report.params if p.requires_grad):
        lines.insert(0, "the loss carries no gradient at all: is the forward under torch.no_grad(), or detached?")
    fail(
        f"{len(problems)} of {trainable} trainable parameter tensors of {report.model.type} get no usable "
        f"gradient ({loss})",
        lines,
        limit=15,
    )


def assert_no_nonfinite(model: nn.Module, inputs: Any, loss_fn: LossFn | None = None, *, backward: bool = True) -> None:
    """No NaN/Inf in any module's forward output, in the loss or (unless ``backward=False``) in any gradient.
    On failure, names the first module that produced one and shows its inputs' statistics.

    ``loss_fn(output)`` returns the scalar to differentiate (default: the mean of every floating output).

    >>> assert_no_nonfinite(model, torch.randn(8, 3, 32, 32) * 1e4)   # large inputs: does anything overflow?
    """
    __tracebackhide__ = True
    report = find_nonfinite(model, inputs, loss="mean" if loss_fn is None else loss_fn, backward=backward)
    if report.ok:
        return
    body = plain_text(report)
    fail(f"{report.model.type} produces NaN/Inf", body[1:-1], limit=len(body))  # the view without header and verdict
