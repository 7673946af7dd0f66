"""Report of NaN/Inf tracing (``modscope.detect_nonfinite`` / ``modscope nan``): where the first non-finite value
appeared in the forward pass and where the first non-finite gradient appeared in the backward pass."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from modscope.reports.presented import Presented
from modscope.reports.static import ModelRef


class Origin(str, Enum):
    """Who made the value non-finite."""

    MODULE = "module"  # this module's own computation (its inputs/incoming gradient were finite)
    INPUT = "input"  # forward: already non-finite in the module's input (made by code outside submodules)
    DOWNSTREAM = "downstream"  # backward: already non-finite in the gradient arriving at the module's output


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one tensor: min/max/mean over its finite elements, and how many are not finite."""

    label: str  # "input 0", "output", "output[1]", "kwarg mask", ...
    shape: tuple[int, ...]
    dtype: str
    min: float | None  # None: no finite element
    max: float | None
    mean: float | None
    nan: int
    posinf: int
    neginf: int
    changed_in_place: bool = False  # modified in place after the call: the values shown are the later ones

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"shape": list(self.shape), "nonfinite": self.nonfinite}


@dataclass(frozen=True)
class NonfiniteEvent:
    """The first non-finite value of one pass.

    Forward: ``module``'s output ``tensor`` holds NaN/Inf; ``inputs``/``outputs`` describe that call.
    Backward: the gradient named by ``tensor`` ("input 0", "output", or a parameter name) holds NaN/Inf.
    """

    phase: str  # "forward" | "backward"
    module: str  # "" = the root module
    type: str
    call: int  # which forward pass (1-based) this happened in, or whose graph the backward ran through
    tensor: str
    origin: Origin
    inputs: tuple[TensorStats, ...] = ()
    outputs: tuple[TensorStats, ...] = ()
    min: float | None = None  # backward: min and max of the gradient (NaN or +-Inf)
    max: float | None = None
    later: int = 0  # further non-finite module outputs (forward) or gradients (backward) in the same pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "module": self.module,
            "type": self.type,
            "call": self.call,
            "tensor": self.tensor,
            "origin": self.origin.value,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "min": self.min,
            "max": self.max,
            "later": self.later,
        }


@dataclass(frozen=True)
class NonfiniteReport(Presented):
    """What NaN/Inf tracing saw; ``ok`` is False when anything non-finite was found."""

    model: ModelRef
    forward: NonfiniteEvent | None
    backward: NonfiniteEvent | None
    forward_passes: int
    checked_backward: bool
    loss: str | None = None  # one-shot runs (``modscope nan``): the loss kind and value
    loss_value: float | None = None
    error: str | None = None  # the forward pass raised this after the non-finite value appeared

    @property
    def loss_nonfinite(self) -> bool:
        value = self.loss_value
        return value is not None and (value != value or value in (float("inf"), float("-inf")))

    @property
    def ok(self) -> bool:
        return self.forward is None and self.backward is None and not self.loss_nonfinite

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.nan/1",
            "model": asdict(self.model),
            "ok": self.ok,
            "forward": None if self.forward is None else self.forward.to_dict(),
            "backward": None if self.backward is None else self.backward.to_dict(),
            "forward_passes": self.forward_passes,
            "checked_backward": self.checked_backward,
            "loss": None if self.loss is None else {"kind": self.loss, "value": self.loss_value},
            "error": self.error,
        }
