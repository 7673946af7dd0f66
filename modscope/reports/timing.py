"""Report of per-layer timing (``modscope.time_layers`` / ``modscope time``). Times are nanoseconds."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modscope.reports.presented import Presented
from modscope.reports.static import ModelRef


@dataclass(frozen=True)
class TimeStat:
    """Median and 90th percentile over the timed repeats, in nanoseconds."""

    median: float
    p90: float

    def to_dict(self) -> dict[str, float]:
        return {"median_ns": self.median, "p90_ns": self.p90}


@dataclass(frozen=True)
class LayerTiming:
    """One module (all its calls in an iteration added up). ``self`` excludes time inside child modules;
    ``total`` includes it. Shares are of the summed self times, so they add up to 1 per pass."""

    name: str  # "" = the root module
    type: str
    calls: int  # calls per iteration
    forward_self: TimeStat
    forward_total: TimeStat
    forward_share: float
    backward_self: TimeStat | None = None  # None: no backward measured, or no gradient passed through
    backward_total: TimeStat | None = None
    backward_share: float | None = None
    below_resolution: bool = False  # a median self time under the timer's resolution: treat as ~0

    def to_dict(self) -> dict[str, Any]:
        def stat(s: TimeStat | None):
            return None if s is None else s.to_dict()

        return {
            "name": self.name,
            "type": self.type,
            "calls": self.calls,
            "forward": {"self": stat(self.forward_self), "total": stat(self.forward_total),
                        "share": self.forward_share},
            "backward": None if self.backward_self is None else {
                "self": stat(self.backward_self), "total": stat(self.backward_total), "share": self.backward_share
            },
            "below_resolution": self.below_resolution,
        }


@dataclass(frozen=True)
class PassTiming:
    """A whole pass: ``bare`` timed without any hooks, ``hooked`` while timing the layers, and ``layer_sum``
    the sum of the layers' median self times (what the per-layer table accounts for)."""

    bare: TimeStat
    hooked: TimeStat
    layer_sum: float
    # CUDA: share of this pass's timed runs (bare and hooked) queued entirely while the GPU was held back, whose
    # times are the GPU's work alone, without gaps where it waited for the CPU; None on CPU
    queued_ahead: float | None = None

    @property
    def coverage(self) -> float:
        """layer_sum / bare median: 1.0 means the per-layer numbers add up to the unhooked pass exactly."""
        return self.layer_sum / self.bare.median if self.bare.median else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"bare": self.bare.to_dict(), "hooked": self.hooked.to_dict(), "layer_sum_ns": self.layer_sum,
                "coverage": self.coverage, "queued_ahead": self.queued_ahead}


@dataclass(frozen=True)
class TimingReport(Presented):
    """Per-layer forward (and optionally backward) times over ``repeat`` iterations after ``warmup``."""

    model: ModelRef
    device: str
    clock: str  # "perf_counter_ns" (CPU), "cupti_kernels" or "cuda_event" (CUDA)
    resolution_ns: float
    warmup: int
    repeat: int
    forward: PassTiming
    backward: PassTiming | None
    layers: tuple[LayerTiming, ...]  # slowest first (forward + backward self time)
    clock_note: str | None = None  # CUDA: why layers were timed with events rather than kernel timestamps

    def layer(self, name: str) -> LayerTiming:
        for t in self.layers:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.time/1",
            "model": asdict(self.model),
            "device": self.device,
            "clock": self.clock,
            "clock_note": self.clock_note,
            "resolution_ns": self.resolution_ns,
            "warmup": self.warmup,
            "repeat": self.repeat,
            "forward": self.forward.to_dict(),
            "backward": None if self.backward is None else self.backward.to_dict(),
            "layers": [t.to_dict() for t in self.layers],
        }
