"""Reports of gradient flow: one backward pass (``modscope.grads``) and a watched training run
(``modscope.watch_gradients``). Norms are L2 norms of a parameter's gradient, in float32."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from modscope.reports.presented import Presented
from modscope.reports.static import ModelRef


class GradStatus(str, Enum):
    """Verdict for one parameter's gradient. Members are listed from most to least severe."""

    NONFINITE = "nonfinite"  # NaN or Inf somewhere in the gradient
    NO_GRAD = "no_grad"  # trainable, but no gradient reached it: unused in forward, or detached
    ZERO = "zero"  # a gradient of exact zeros
    EXPLODING = "exploding"  # norm above GradThresholds.exploding
    VANISHING = "vanishing"  # norm below GradThresholds.vanishing
    OK = "ok"
    FROZEN = "frozen"  # requires_grad=False: no gradient expected, not a problem

    @property
    def fails(self) -> bool:
        """True for the verdicts that make ``modscope grads`` exit 1."""
        return self in (GradStatus.NONFINITE, GradStatus.NO_GRAD, GradStatus.ZERO)


SEVERITY = {status: rank for rank, status in enumerate(GradStatus)}  # lower = worse


def worst(statuses) -> GradStatus:
    """The most severe of ``statuses`` (FROZEN when there are none)."""
    return min(statuses, key=SEVERITY.__getitem__, default=GradStatus.FROZEN)


def count_statuses(records) -> dict[str, int]:
    """{status: how many records have it}, most severe first, statuses that occur only."""
    found = [r.status for r in records]
    return {s.value: found.count(s) for s in GradStatus if s in found}


class _Verdicts:
    """For reports with ``params`` records carrying a ``status``: the failing ones, ok, and a tally."""

    params: tuple

    @property
    def problems(self) -> tuple:
        """Trainable parameters whose status fails the check (no_grad, zero, nonfinite)."""
        return tuple(p for p in self.params if p.status.fails)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Number of parameter tensors per status, most severe first (statuses that occur only)."""
        return count_statuses(self.params)


@dataclass(frozen=True)
class GradThresholds:
    """Bounds on a parameter's gradient norm; outside them it is ``vanishing`` or ``exploding``."""

    vanishing: float = 1e-8
    exploding: float = 1e3

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ParamGrad:
    """One parameter (listed once, under its first name) after one backward pass.

    ``ratio`` is grad norm / weight norm: roughly how far one SGD step with learning rate 1 would move it.
    """

    name: str
    module: str
    shape: tuple[int, ...]
    numel: int
    requires_grad: bool
    status: GradStatus
    norm: float | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    weight_norm: float | None = None
    ratio: float | None = None
    shared_with: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "shape": list(self.shape),
            "numel": self.numel,
            "requires_grad": self.requires_grad,
            "status": self.status.value,
            "norm": self.norm,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "weight_norm": self.weight_norm,
            "ratio": self.ratio,
            "shared_with": list(self.shared_with),
        }


@dataclass(frozen=True)
class ModuleGrad:
    """Aggregate over the parameters a module owns directly (a "layer"); None where no gradient exists."""

    name: str
    type: str
    params: int  # parameter tensors owned directly
    trainable: int
    status: GradStatus  # the worst status among its parameters
    norm: float | None  # L2 norm over all its gradients together
    mean_abs: float | None  # mean |g| over all gradient elements
    max_abs: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status.value}


@dataclass(frozen=True)
class GradReport(_Verdicts, Presented):
    """One forward, loss and backward pass (``modscope.grads``); ``ok`` is False when a trainable parameter is
    ``no_grad``, ``zero`` or ``nonfinite``."""

    model: ModelRef
    loss: str
    loss_value: float | None  # None: the output carried no gradient at all
    thresholds: GradThresholds
    params: tuple[ParamGrad, ...]
    modules: tuple[ModuleGrad, ...]

    def param(self, name: str) -> ParamGrad:
        for p in self.params:
            if p.name == name or name in p.shared_with:
                return p
        raise KeyError(name)

    def module(self, name: str) -> ModuleGrad:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.grads/1",
            "model": asdict(self.model),
            "ok": self.ok,
            "loss": {"kind": self.loss, "value": self.loss_value},
            "thresholds": self.thresholds.to_dict(),
            "counts": self.counts(),
            "params": [p.to_dict() for p in self.params],
            "modules": [m.to_dict() for m in self.modules],
        }


@dataclass(frozen=True)
class GradStep:
    """One recorded step of a watched run: norms over the parameters that had a gradient."""

    step: int  # 1-based
    total_norm: float  # L2 norm over all finite parameter gradients together
    max_norm: float  # largest single-parameter norm
    max_norm_param: str
    with_grad: int  # trainable parameters that had a gradient
    no_grad: int  # trainable parameters without one
    zero: int
    nonfinite: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParamGradStats:
    """One parameter over a watched run: running min/mean/max of its gradient norm and how often it failed."""

    name: str
    module: str
    numel: int
    requires_grad: bool
    status: GradStatus  # worst over the run: nonfinite once, never a gradient, always zero, ...
    steps_with_grad: int
    no_grad_steps: int
    zero_steps: int
    nonfinite_steps: int
    norm_min: float | None  # over the steps with a finite gradient
    norm_mean: float | None
    norm_max: float | None
    norm_last: float | None  # the last step's norm (None: no gradient in the last step)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status.value}


@dataclass(frozen=True)
class GradWatchReport(_Verdicts, Presented):
    """Gradient history of a training run (``modscope.watch_gradients``)."""

    model: ModelRef
    step_on: str  # "backward" (each backward pass) or "optimizer" (each optimizer.step())
    thresholds: GradThresholds
    steps: tuple[GradStep, ...]
    params: tuple[ParamGradStats, ...]

    def param(self, name: str) -> ParamGradStats:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.grad_watch/1",
            "model": asdict(self.model),
            "ok": self.ok,
            "step_on": self.step_on,
            "thresholds": self.thresholds.to_dict(),
            "counts": self.counts(),
            "steps": [s.to_dict() for s in self.steps],
            "params": [p.to_dict() for p in self.params],
        }
