"""Timers for per-layer timing: ``perf_counter_ns`` on CPU, CUDA events on a GPU.

A clock hands out *marks* (cheap to take inside hooks) and turns them into nanoseconds only after ``sync()``,
which the caller runs once per iteration: a CUDA mark is an event recorded on the current stream, so taking
one never waits for the GPU.
"""
from __future__ import annotations

import statistics
import time

import torch

from modscope.errors import UsageError


class CpuClock:
    name = "perf_counter_ns"

    def __init__(self):
        self.resolution_ns = _cpu_resolution()

    def mark(self) -> int:
        return time.perf_counter_ns()

    def reset(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def since(self, start: int, mark: int) -> float:
        return float(mark - start)


class CudaClock:
    """Events come from a pool reused every iteration (``reset()``), so none is created inside hooks."""

    name = "cuda_event"

    def __init__(self, device: torch.device):
        self.device = device
        self._pool: list[torch.cuda.Event] = []
        self._used = 0
        self.resolution_ns = self._resolution()

    def mark(self) -> torch.cuda.Event:
        if self._used == len(self._pool):
            self._pool.append(torch.cuda.Event(enable_timing=True))
        event = self._pool[self._used]
        self._used += 1
        event.record()
        return event

    def reset(self) -> None:
        self._used = 0

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def since(self, start: torch.cuda.Event, mark: torch.cuda.Event) -> float:
        return start.elapsed_time(mark) * 1e6  # ms -> ns

    def _resolution(self) -> float:
        """The smallest interval the events report: two back-to-back events, median of 50 tries."""
        with torch.cuda.device(self.device):
            gaps = []
            for _ in range(50):
                self.reset()
                a, b = self.mark(), self.mark()
                self.sync()
                gaps.append(self.since(a, b))
            self.reset()
        positive = [g for g in gaps if g > 0]
        return max(statistics.median(positive) if positive else 0.0, 500.0)  # CUDA documents ~0.5 us


def clock_for(device: torch.device):
    if device.type == "cuda":
        return CudaClock(device)
    if device.type == "cpu":
        return CpuClock()
    raise UsageError(f"timing on {device.type!r} devices is not supported (use cpu or cuda)")


def resolve_device(device: str | torch.device | None, fallback: torch.device) -> torch.device:
    """``"cuda"`` -> a usable CUDA device, or a UsageError that says why not."""
    if device is None:
        return fallback
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: not a device (try cpu or cuda)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    return device


def _cpu_resolution() -> float:
    """Median gap between two back-to-back ``perf_counter_ns`` readings that differ (typically tens of ns)."""
    gaps = []
    for _ in range(200):
        a = time.perf_counter_ns()
        b = time.perf_counter_ns()
        while b == a:
            b = time.perf_counter_ns()
        gaps.append(b - a)
    return float(statistics.median(gaps))
