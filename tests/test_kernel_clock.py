"""The CUDA clock made of CUPTI kernel timestamps: how marks are placed in the stream (on any machine, from
traces), and on a GPU that it times what events time without their cost."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.collect.training.kernel_clock import Activity, KernelTraceError, mark_times, put_mark, read_trace
from modscope.errors import UsageError
from tests.contract import assert_unchanged, snapshot

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_mark_stands_for_the_end_of_the_last_work_launched_before_it():
    # launched at CPU times 10, 20, 30; ran on the GPU at [100, 150], [160, 200], [200, 260]
    work = [Activity(20, 160, 200, 7), Activity(10, 100, 150, 7), Activity(30, 200, 260, 7)]
    marks = [5, 15, 25, 25, 35]  # before any launch, after the first, after the second (twice), after all
    assert mark_times(marks, work) == [100, 150, 200, 200, 260]


def test_a_mark_after_work_that_finished_early_keeps_the_latest_end():
    # a long copy launched first ends after a short kernel launched next: the stream had reached 300
    work = [Activity(10, 100, 300, 1), Activity(20, 120, 130, 1)]
    assert mark_times([25], work) == [300]


def test_work_on_several_streams_or_no_work_is_refused():
    with pytest.raises(KernelTraceError, match="2 streams"):
        mark_times([1], [Activity(0, 1, 2, 1), Activity(0, 1, 2, 2)])
    with pytest.raises(KernelTraceError, match="no GPU activity"):
        mark_times([1], [])


class _Event:
    """The few fields of a kineto event that read_trace uses, for a GPU activity (none run on a CPU)."""

    def __init__(self, name, correlation, start, end):
        self._name, self._correlation, self._start, self._end = name, correlation, start, end

    def device_type(self):
        return torch.autograd.DeviceType.CUDA

    def name(self):
        return self._name

    def correlation_id(self):
        return self._correlation

    def start_ns(self):
        return self._start

    def end_ns(self):
        return self._end

    def device_resource_id(self):
        return 7


def test_marks_are_read_from_a_real_profiler_trace_and_work_without_its_launch_is_refused():
    with torch.autograd.profiler.profile() as prof:
        put_mark(0)
        torch.randn(64, 64) @ torch.randn(64, 64)  # CPU ops between the marks are not marks
        put_mark(1)
        put_mark(2)
    events = list(prof.kineto_results.events())
    marks, activities = read_trace(events, 3)
    assert marks == sorted(marks) and len(set(marks)) == 3 and activities == []
    with pytest.raises(KernelTraceError, match="lacks 1 of 4 marks"):
        read_trace(events, 4)
    with pytest.raises(KernelTraceError, match="lacks the launch of GPU activity 'gemm'"):
        read_trace([*events, _Event("gemm", 12345, 1, 2)], 3)


def test_an_unknown_clock_is_a_usage_error():
    with pytest.raises(UsageError, match="--clock 'cupti'"):
        modscope.time_layers(nn.Linear(2, 2), torch.randn(1, 2), clock="cupti")


@cuda
@pytest.mark.cuda
def test_cuda_kernel_clock_adds_nothing_to_the_stream():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    before = snapshot(model)
    report = modscope.time_layers(model, torch.randn(16, 3, 224, 224), device="cuda", backward=True, warmup=3,
                                  repeat=7)
    assert_unchanged(model, before)
    assert report.clock == "cupti_kernels" and report.clock_note is None
    for p in (report.forward, report.backward):
        # most runs queued while the GPU was held (under the profiler the CPU's pace varies more than without)
        assert p.queued_ahead >= 0.5
        # the layers tile the hooked pass's GPU work exactly (each mark is a point of the same stream)
        assert 0.97 < p.layer_sum / p.hooked.median < 1.03
        # and with no event in the stream the hooked pass is the unhooked one (events: 123-127% on an H200;
        # the bound leaves room for run-to-run noise of a 16-image batch)
        assert p.hooked.median / p.bare.median < 1.12
    assert report.layer("layer1.0.conv1").forward_self.median > 0


@cuda
@pytest.mark.cuda
def test_cuda_timing_under_a_running_profiler_falls_back_to_events_and_says_so():
    with torch.profiler.profile():
        report = modscope.time_layers(nn.Linear(64, 64), torch.randn(8, 64), device="cuda", warmup=1, repeat=2)
    assert report.clock == "cuda_event" and report.clock_note == "CUDA events: a torch profiler is already running"
    assert report.to_dict()["clock_note"] == report.clock_note
