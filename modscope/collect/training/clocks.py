"""Timers for per-layer timing: ``perf_counter_ns`` on CPU, CUDA events on a GPU.

A clock hands out *marks* (cheap to take inside hooks) and turns them into nanoseconds only after ``sync()``,
which the caller runs once per iteration: a CUDA mark is an event recorded on the current stream, so taking
one never waits for the GPU.

On a GPU, events measure when the GPU got to them. If the CPU is slower to queue work than the GPU is to do
it (Python hooks, many small kernels), a layer's span also holds the time the GPU sat waiting for the next
launch: on an H200, resnet50's per-layer times added up to 232% of an unhooked pass. ``hold(ns)`` queues a
GPU wait (``torch.cuda._sleep``); ``QueueAhead`` puts one in front of every pass (and more inside long ones),
each long enough for the CPU to queue what follows, so the GPU then runs the layers back to back and the
events time its work alone.
"""
from __future__ import annotations

import statistics
import time

import torch

from modscope.errors import UsageError


class CpuClock:
    name = "perf_counter_ns"
    holds = False  # nothing to hold back: CPU time is spent where it is measured

    def __init__(self):
        self.resolution_ns = _cpu_resolution()

    def mark(self) -> int:
        return time.perf_counter_ns()

    def hold(self, ns: float) -> None:
        pass

    def reset(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
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
        self._cycles_per_ns = self._sleep_rate()
        self.holds = self._cycles_per_ns is not None
        self.resolution_ns = self._resolution()

    def hold(self, ns: float) -> None:
        """Make the GPU wait about ``ns`` before the work queued next (see the module docstring)."""
        if self._cycles_per_ns is not None and ns > 0:
            with torch.cuda.device(self.device):
                torch.cuda._sleep(int(ns * self._cycles_per_ns))

    def rescale(self, factor: float) -> None:
        """A wait took ``1/factor`` of what was asked (the GPU's clock changed): correct the sleep rate."""
        if self._cycles_per_ns is not None:
            self._cycles_per_ns *= min(max(factor, 0.25), 4.0)

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

    def close(self) -> None:
        pass

    def since(self, start: torch.cuda.Event, mark: torch.cuda.Event) -> float:
        return start.elapsed_time(mark) * 1e6  # ms -> ns

    def _sleep_rate(self) -> float | None:
        """GPU clock cycles per ns of ``torch.cuda._sleep`` (one synchronisation); None where torch lacks it."""
        sleep = getattr(torch.cuda, "_sleep", None)
        if sleep is None:
            return None
        with torch.cuda.device(self.device):
            sleep(1000)  # the first launch loads the kernel
            events = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
            for a, b in zip(events[::2], events[1::2]):  # the fastest of three: the clock ramps up under load
                a.record()
                sleep(1_000_000)
                b.record()
            self.sync()
            elapsed = min(self.since(a, b) for a, b in zip(events[::2], events[1::2]))
        return 1_000_000 / elapsed if elapsed > 0 else None

    def _resolution(self) -> float:
        """The smallest interval the events report: two back-to-back events (the GPU held back while both are
        queued, so the gap is the GPU's, not the launch latency's), median of 50 tries."""
        with torch.cuda.device(self.device):
            gaps = []
            for _ in range(50):
                self.reset()
                self.hold(100_000)
                a, b = self.mark(), self.mark()
                self.sync()
                gaps.append(self.since(a, b))
            self.reset()
        positive = [g for g in gaps if g > 0]
        return max(statistics.median(positive) if positive else 0.0, 500.0)  # CUDA documents ~0.5 us


FIRST_HOLD_NS = 20e6  # the GPU wait before the first pass of each kind, before anything was measured
MAX_HOLD_NS = 1e9
SEGMENT_MARKS = 128  # a new wait after this many marks in one pass: what is pending stays well inside the queue


class QueueAhead:
    """GPU waits that let the CPU queue a pass before the GPU runs it, so events time the GPU's work alone.

    A pass (forward or backward, hooked or not: each a *kind*) starts behind a wait of twice what the CPU took
    to queue the longest stretch of the last pass of its kind, plus 1 ms. CUDA's launch queue holds about a
    thousand operations; a resnet50 backward with its hooks' events is more, and the CPU blocked on the full
    queue before the wait ran out. So after every ``SEGMENT_MARKS`` marks another wait is queued, twice as long
    as the CPU took for the stretch before it: the GPU runs one stretch, then waits while the CPU queues the
    next (at least twice the longest stretch of the last pass of its kind, as stretches differ). Waits in the
    middle of a pass fall inside the spans around them; ``held_inside`` gives what to take off. Every wait
    sits between two marks of its own: the GPU's clock speeds up and slows down, so the length ``_sleep``
    gave is read back and its rate corrected, and a stretch counts as held only when the CPU had queued it
    before the wait in front of it ended on the GPU. Where a kind's pass is not held twice in a row
    (the CPU waited for the GPU inside it, e.g. on ``.item()``), that kind runs without waits.
    """

    def __init__(self, clock):
        self.clock = clock
        self.ran_out: dict = {}  # kind -> passes in a row not held (at 2, that kind stops waiting)
        self.waits: list[list] = []  # this iteration's: [kind, ns asked, mark before, mark after, CPU ns of the
        # stretch it stands in front of (None while that stretch is being queued)]
        self.held: dict = {}  # pass name ("forward", "backward") -> every stretch held, last settled iteration
        self.longest: dict = {}  # kind -> CPU ns of its longest stretch in the last settled iteration
        self._kind = None
        self._marks = 0
        self._since = 0
        self._intervals: list | None = None

    def begin(self, clock=None) -> None:
        """A new iteration, its marks taken on ``clock`` (default: the one given at construction)."""
        if clock is not None:
            self.clock = clock
        self.waits = []
        self._intervals = None

    def start(self, kind) -> None:
        """Before a pass: queue its first wait."""
        self._kind = kind
        self._marks = 0
        if not self.clock.holds or self.ran_out.get(kind, 0) >= 2:
            self._wait(None)
        elif kind in self.longest:
            self._wait(2 * self.longest[kind] + 1e6)
        else:
            self._wait(FIRST_HOLD_NS)

    def tick(self) -> None:
        """Before every mark inside the pass: after SEGMENT_MARKS of them, the next stretch gets its wait."""
        if self._kind is None or not self.waits or self.waits[-1][1] is None:
            return
        self._marks += 1
        if self._marks >= SEGMENT_MARKS:
            self._marks = 0
            stretch = self._close()  # stretches differ (a conv's backward queues more than a ReLU's): the
            self._wait(2 * max(stretch, self.longest.get(self._kind, 0)) + 5e5)  # longest seen sets the floor

    def done(self) -> None:
        """Right after the pass is queued."""
        if self.waits and self.waits[-1][1] is not None:
            self._close()
        self._kind = None

    def _wait(self, ns: float | None) -> None:
        entry = [self._kind, None if ns is None else min(ns, MAX_HOLD_NS), None, None, None]
        if entry[1] is not None:
            entry[2] = self.clock.mark()
            self.clock.hold(entry[1])
            entry[3] = self.clock.mark()
        self.waits.append(entry)
        self._since = time.perf_counter_ns()

    def _close(self) -> int:
        stretch = time.perf_counter_ns() - self._since
        self.waits[-1][4] = stretch
        return stretch

    def held_inside(self, since, begin: float, end: float) -> float:
        """Nanoseconds of waits inside [begin, end]; ``since`` turns a mark into ns from the iteration's first
        mark (the same for every call of one iteration, after its sync)."""
        if self._intervals is None:
            self._intervals = [(since(w[2]), since(w[3])) for w in self.waits if w[1] is not None]
        return sum(b - a for a, b in self._intervals if begin <= a and b <= end)

    def settle(self) -> None:
        """After the iteration's sync: which passes were held throughout, and what sizes the next waits."""
        self.held, longest = {}, {}
        asked = waited_in_all = 0.0
        for kind, ns, before, after, stretch in self.waits:
            name = kind[-1]
            self.held.setdefault(name, ns is not None)
            if ns is None:
                continue
            waited = self.clock.since(before, after)
            asked, waited_in_all = asked + ns, waited_in_all + waited
            self.held[name] = self.held[name] and stretch is not None and stretch < 0.8 * waited
            longest[kind] = max(longest.get(kind, 0), stretch or 0)
        if waited_in_all > 0:  # once per iteration, from all its waits together
            self.clock.rescale(asked / waited_in_all)
        self.longest.update(longest)
        for kind in longest:
            self.ran_out[kind] = 0 if self.held[kind[-1]] else self.ran_out.get(kind, 0) + 1


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
