"""A CUDA clock that puts nothing in the stream: kernel timestamps from CUPTI, read through torch's profiler.

A CUDA event recorded between two kernels costs the GPU about 1.3 us (the stream drains before the timestamp
is written), so with an event at every module boundary resnet50's hooked forward took 127% of an unhooked
one on an H200. This clock's marks are instant profiler annotations, CPU-side only; CUPTI records when every
kernel (and copy, and fill) ran and which launch queued it. A mark then stands for the point in the stream
where it was taken: the end of the last GPU activity launched before it, as an event there would have been
written. Spans between marks are therefore the GPU's work between the same two points that events would
time, without the events.

The profiler runs for one iteration at a time (``reset`` starts it, ``sync`` stops it and reads the trace).
Where the trace cannot place every mark with certainty (a GPU activity whose launch is not in the trace, work
on more than one stream, a profiler already running), ``KernelTraceError`` says why and ``time_layers``
falls back to events, saying so in the report.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

MARKER = "modscope.mark:"
LAUNCH_KINDS = {"cuda_runtime", "cuda_driver"}  # CPU-side API calls; their correlation ids are CUPTI's


class KernelTraceError(RuntimeError):
    """The kernel trace of an iteration cannot place the marks: time with events instead."""


@dataclass(frozen=True)
class Activity:
    """One GPU activity of the trace: when its launch was called (CPU clock) and when it ran (GPU, in ns)."""

    launched: int
    start: int
    end: int
    stream: int


def unusable_reason() -> str | None:
    """Why this process cannot time with the kernel trace, or None."""
    from torch.profiler import ProfilerActivity, supported_activities

    if ProfilerActivity.CUDA not in supported_activities():
        return "this torch build's profiler cannot trace CUDA kernels"
    if torch.autograd.profiler._is_profiler_enabled:
        return "a torch profiler is already running"
    return None


class KernelClock:
    """Marks are numbers; ``since`` is defined once ``sync`` has read the iteration's trace. Waits
    (``hold``), their rate and the resolution come from the events clock it stands beside."""

    name = "cupti_kernels"

    def __init__(self, events_clock):
        self.base = events_clock
        self.device = events_clock.device
        self.holds = events_clock.holds
        self.resolution_ns = events_clock.resolution_ns
        self._profile = None
        self._marks = 0
        self._times: list[int] = []

    def hold(self, ns: float) -> None:
        self.base.hold(ns)

    def rescale(self, factor: float) -> None:
        self.base.rescale(factor)

    def reset(self) -> None:
        self.close()
        self._marks, self._times = 0, []
        self._profile = torch.autograd.profiler.profile(use_device="cuda", use_kineto=True, record_shapes=False)
        self._profile.__enter__()

    def mark(self) -> int:
        index = self._marks
        self._marks += 1
        put_mark(index)
        return index

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)
        profile, self._profile = self._profile, None
        profile.__exit__(None, None, None)
        self._times = mark_times(*read_trace(profile.kineto_results.events(), self._marks))

    def close(self) -> None:
        """Stop a profiler left running (the forward raised before ``sync``)."""
        if self._profile is not None:
            profile, self._profile = self._profile, None
            profile.__exit__(None, None, None)

    def since(self, start: int, mark: int) -> float:
        return float(self._times[mark] - self._times[start])


def put_mark(index: int) -> None:
    """An instant annotation in the running profiler's trace, named after ``index``."""
    handle = torch.ops.profiler._record_function_enter_new(f"{MARKER}{index}", None)
    torch.ops.profiler._record_function_exit._RecordFunction(handle)


def read_trace(events, marks: int) -> tuple[list[int], list[Activity]]:
    """The CPU time of each of ``marks`` marks and the GPU activities, from a profiler's kineto events."""
    mark_at: dict[int, int] = {}
    launches: dict[int, int] = {}
    device_events = []
    annotations: set[str] = set()  # CPU ranges' names: kineto mirrors ranges onto the GPU timeline
    for event in events:
        if event.device_type() == torch.autograd.DeviceType.CUDA:
            device_events.append(event)
            continue
        name = event.name()
        if name.startswith(MARKER):
            mark_at[int(name[len(MARKER):])] = event.start_ns()
        elif _is_launch(event, name):
            launches[event.correlation_id()] = event.start_ns()
        else:
            annotations.add(name)
    missing = [i for i in range(marks) if i not in mark_at]
    if missing:
        raise KernelTraceError(f"the profiler trace lacks {len(missing)} of {marks} marks")
    activities = []
    for event in device_events:
        if _kind(event) == "gpu_user_annotation" or (_kind(event) is None and event.name() in annotations):
            continue
        launched = launches.get(event.correlation_id())
        if launched is None:
            raise KernelTraceError(f"the profiler trace lacks the launch of GPU activity {event.name()!r}")
        activities.append(Activity(launched, event.start_ns(), event.end_ns(), event.device_resource_id()))
    return [mark_at[i] for i in range(marks)], activities


def _kind(event) -> str | None:
    """The kineto activity type (torch >= 2.12 says it), or None."""
    kind = getattr(event, "activity_type", None)
    return None if kind is None else kind()


def _is_launch(event, name: str) -> bool:
    kind = _kind(event)
    if kind is not None:
        return kind in LAUNCH_KINDS
    return name.startswith("cu") and "::" not in name  # cudaLaunchKernel, cuLaunchKernel, cudaMemcpyAsync...


def mark_times(marks: list[int], activities: list[Activity]) -> list[int]:
    """GPU time of each mark (given by its CPU time): the end of the last activity launched before it, or,
    before the first launch, the start of the first activity. One stream only: on several, what a mark
    stands for in the others is not defined."""
    if not activities:
        raise KernelTraceError("the profiler trace holds no GPU activity")
    streams = {a.stream for a in activities}
    if len(streams) > 1:
        raise KernelTraceError(f"the iteration ran GPU work on {len(streams)} streams")
    ordered = sorted(activities, key=lambda a: a.launched)
    launched = [a.launched for a in ordered]
    reached = []  # running max: the end of everything launched so far
    for a in ordered:
        reached.append(max(a.end, reached[-1]) if reached else a.end)
    times = []
    for cpu in marks:
        before = bisect.bisect_left(launched, cpu)
        times.append(reached[before - 1] if before else ordered[0].start)
    return times
