"""Per-layer timing: self vs total, forward and backward, against layers whose cost is known."""
from __future__ import annotations

import json
import time
from io import StringIO

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.errors import ForwardError, UsageError
from modscope.render.json import dumps
from modscope.render.timing import timing_view
from tests import training_models as tm
from tests.contract import assert_unchanged, snapshot

MS = 1e6  # nanoseconds per millisecond
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class VirtualClock:
    """Reads tm.VIRTUAL_NS, which only Spin modules advance: per-layer times become exact."""

    name = "virtual"
    resolution_ns = 1.0
    holds = False

    def mark(self) -> int:
        return tm.VIRTUAL_NS[0]

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


@pytest.fixture
def virtual(monkeypatch):
    """time_layers with the virtual clock: returns a function like time_layers(model, inputs, ...)."""
    import modscope.collect.training.timing as timing

    monkeypatch.setattr(tm, "VIRTUAL_NS", [0])
    monkeypatch.setattr(timing, "clock_for", lambda device: VirtualClock())
    return modscope.time_layers


class HoldingClock(VirtualClock):
    """A virtual clock that can hold the GPU back (as CUDA events can): records every hold asked for."""

    holds = True

    SLACK_NS = 50_000_000  # each wait lasts this much longer than asked, as on a GPU whose clock slowed down

    def __init__(self):
        self.holds_asked: list[float] = []
        self.waited: list[int] = []
        self.rescaled: list[float] = []

    def hold(self, ns: float) -> None:
        self.holds_asked.append(ns)
        self.waited.append(round(ns) + self.SLACK_NS)
        tm.VIRTUAL_NS[0] += self.waited[-1]  # the wait passes on the (virtual) GPU timeline

    def rescale(self, factor: float) -> None:
        self.rescaled.append(factor)


class WaitsForTheGpu(nn.Module):
    """Its forward takes as long as the last wait plus 5 ms of real time, like a forward calling .item(),
    which waits until the GPU has finished everything queued so far, the wait included."""

    def __init__(self, clock: HoldingClock):
        super().__init__()
        self.clock, self.fc = clock, nn.Linear(8, 2)

    def forward(self, x):
        waited = self.clock.waited[-1] if self.clock.waited else 0
        time.sleep((waited + 5e6) / 1e9)
        return self.fc(x)


def _holding(monkeypatch) -> HoldingClock:
    import modscope.collect.training.timing as timing

    clock = HoldingClock()
    monkeypatch.setattr(tm, "VIRTUAL_NS", [0])
    monkeypatch.setattr(timing, "clock_for", lambda device: clock)
    return clock


def test_iterations_are_queued_behind_a_hold_sized_from_the_last_one(monkeypatch):
    clock = _holding(monkeypatch)
    report = modscope.time_layers(tm.KnownTimes(), torch.randn(2, 8), backward=True, warmup=1, repeat=3)
    from modscope.collect.training.clocks import FIRST_HOLD_NS

    # forward and backward of the bare and the hooked iteration: nothing measured yet
    assert clock.holds_asked[:4] == [FIRST_HOLD_NS] * 4
    assert len(clock.holds_asked) == 2 * 2 * (1 + 3)
    assert all(1e6 < ns != FIRST_HOLD_NS for ns in clock.holds_asked[4:])  # 2 x the queuing measured + 1 ms
    assert report.forward.queued_ahead == report.backward.queued_ahead == 1.0
    # every wait came out SLACK_NS longer than asked: the sleep rate is corrected down, once per iteration
    assert len(clock.rescaled) == 2 * (1 + 3) and all(0 < f < 1 for f in clock.rescaled)
    first = clock.holds_asked[:2]  # the bare iteration's forward and backward waits
    assert clock.rescaled[0] == pytest.approx(sum(first) / (sum(first) + 2 * HoldingClock.SLACK_NS))
    # the waits are not in the layer times: exactly the spun times, as without holding
    assert report.layer("slow").forward_self.median == 20 * MS and report.layer("fast").backward_self.median == 25 * MS
    assert report.to_dict()["backward"]["queued_ahead"] == 1.0


def test_long_passes_get_waits_in_the_middle_that_no_span_counts(monkeypatch):
    from modscope.collect.training.clocks import SEGMENT_MARKS

    clock = _holding(monkeypatch)
    model = nn.Sequential(nn.Linear(8, 8), *(tm.Spin(1, 2) for _ in range(100)))  # > SEGMENT_MARKS marks each way
    report = modscope.time_layers(model, torch.randn(2, 8), backward=True, warmup=0, repeat=2)
    per_iteration = len(clock.holds_asked) / 2
    # bare: one wait per pass; hooked: one per pass plus one per SEGMENT_MARKS marks (2 per module each way)
    assert 2 * 101 > SEGMENT_MARKS and per_iteration > 4
    for layer in report.layers:
        if layer.type == "Spin":
            assert (layer.forward_self.median, layer.backward_self.median) == (1 * MS, 2 * MS), layer.name
    root = report.layer("")
    assert (root.forward_total.median, root.backward_total.median) == (100 * MS, 200 * MS)
    assert report.forward.hooked.median == report.forward.bare.median == 100 * MS
    assert report.backward.hooked.median == 200 * MS


def test_holding_stops_when_the_cpu_waits_for_the_gpu_inside_an_iteration(monkeypatch):
    clock = _holding(monkeypatch)
    report = modscope.time_layers(WaitsForTheGpu(clock), torch.randn(2, 8), warmup=2, repeat=2)
    assert len(clock.holds_asked) == 4  # each forward (no backward here) ran out twice, then ran without a hold
    assert report.forward.queued_ahead == 0.0 and report.backward is None


def test_cpu_clock_reports_no_holding(virtual):
    assert virtual(tm.KnownTimes(), torch.randn(2, 8), warmup=0, repeat=1).forward.queued_ahead is None


@pytest.fixture(scope="module")
def known():
    """KnownTimes on the real clock: slow 20/5 ms, fast 4/25 ms, pair.0 and pair.1 3/3 ms each."""
    return modscope.time_layers(tm.KnownTimes(), torch.randn(2, 8), backward=True, warmup=1, repeat=5)


def ms(stat) -> float:
    return stat.median / MS


def test_self_and_total_times_are_attributed_exactly(virtual):
    report = virtual(tm.KnownTimes(), torch.randn(2, 8), backward=True, warmup=1, repeat=3)
    expected = {"slow": (20, 5), "fast": (4, 25), "pair.0": (3, 3), "pair.1": (3, 3), "fc": (0, 0)}
    for name, (fwd, bwd) in expected.items():
        layer = report.layer(name)
        assert (ms(layer.forward_self), ms(layer.backward_self)) == (fwd, bwd), name
        assert (ms(layer.forward_total), ms(layer.backward_total)) == (fwd, bwd), name
        assert layer.calls == 1
    pair, root = report.layer("pair"), report.layer("")
    assert (ms(pair.forward_self), ms(pair.forward_total)) == (0, 6)
    assert (ms(pair.backward_self), ms(pair.backward_total)) == (0, 6)
    assert (ms(root.forward_self), ms(root.forward_total)) == (0, 30)
    assert report.forward.layer_sum / MS == 30 and report.backward.layer_sum / MS == 36
    assert report.forward.coverage == 1.0 and report.backward.coverage == 1.0
    assert report.layer("slow").forward_share == pytest.approx(20 / 30)
    assert report.layer("fast").backward_share == pytest.approx(25 / 36)
    assert [t.name for t in report.layers[:2]] == ["fast", "slow"]  # 29 ms and 25 ms of self time
    assert report.layer("fc").below_resolution


def test_residual_branches_are_not_stretched(virtual):
    report = virtual(tm.Residual(), torch.randn(2, 8), backward=True, warmup=0, repeat=2)
    assert ms(report.layer("shortcut").backward_self) == 2
    assert ms(report.layer("branch").backward_total) == 20
    assert ms(report.layer("").backward_total) == 22


def test_reused_module_adds_up_its_calls(virtual):
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
            self.step = tm.Spin(2, 3)

        def forward(self, x):
            return self.step(self.step(self.fc(x)))

    layer = virtual(Twice(), torch.randn(2, 8), backward=True, warmup=0, repeat=2).layer("step")
    assert layer.calls == 2 and (ms(layer.forward_self), ms(layer.backward_self)) == (4, 6)


def near(ns: float, ms: float) -> bool:
    """Real clock: busy-waits last at least their time; only the lower bound is firm on a loaded machine."""
    return ns >= ms * MS * 0.95


def test_real_clock(known):
    for name, fwd, bwd in (("slow", 20, 5), ("fast", 4, 25), ("pair.0", 3, 3), ("pair.1", 3, 3)):
        layer = known.layer(name)
        assert near(layer.forward_self.median, fwd) and near(layer.backward_self.median, bwd), name
        assert layer.forward_self.p90 >= layer.forward_self.median
    pair = known.layer("pair")
    assert pair.forward_total.median >= pair.forward_self.median + 6 * MS * 0.95
    keys = [t.forward_self.median + (t.backward_self.median if t.backward_self else 0) for t in known.layers]
    assert keys == sorted(keys, reverse=True)
    assert sum(t.forward_share for t in known.layers) == pytest.approx(1.0)
    assert sum(t.backward_share for t in known.layers if t.backward_share is not None) == pytest.approx(1.0)
    assert known.forward.bare.median >= 30 * MS * 0.95  # 30 ms of forward spins, at least
    assert known.clock == "perf_counter_ns" and known.device == "cpu" and 0 < known.resolution_ns < 10_000


def test_forward_only_and_calls_per_iteration():
    report = modscope.time_layers(tm.ReusedBlock(), torch.randn(2, 8), warmup=1, repeat=3)
    assert report.backward is None
    assert report.layer("block").calls == 3 and report.layer("block.0").calls == 3
    assert report.layer("head").calls == 1
    assert all(t.backward_self is None for t in report.layers)


def test_inplace_model_backward_and_contract():
    model = tm.InplaceReLU()
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)
    x = torch.randn(4, 8, requires_grad=True)
    before = snapshot(model)
    report = modscope.time_layers(model, x, backward=True, warmup=1, repeat=2)
    assert_unchanged(model, before)
    assert x.grad is None and not x._backward_hooks
    assert report.layer("net.1").backward_self is not None


def test_buffers_and_rng_restored():
    model = tm.WithBatchNorm()
    x = torch.randn(4, 8)
    mean = model.bn.running_mean.clone()
    rng = torch.get_rng_state()
    modscope.time_layers(model, x, backward=True, warmup=1, repeat=2)
    assert torch.equal(model.bn.running_mean, mean) and torch.equal(torch.get_rng_state(), rng)


def test_errors():
    model = tm.Raises()
    before = snapshot(model)
    with pytest.raises(ForwardError, match="boom"):
        modscope.time_layers(model, torch.randn(2, 8), repeat=1)
    assert_unchanged(model, before)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UsageError, match="frozen"):
        modscope.time_layers(frozen, torch.randn(1, 2), backward=True)
    with pytest.raises(UsageError, match="repeat"):
        modscope.time_layers(frozen, torch.randn(1, 2), repeat=0)
    with pytest.raises(UsageError, match="not a device"):
        modscope.time_layers(frozen, torch.randn(1, 2), device="gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(UsageError, match="no CUDA device"):
        modscope.time_layers(nn.Linear(2, 2), torch.randn(1, 2), device="cuda")


def test_json_and_view(known, virtual):
    doc = json.loads(dumps(known))
    assert doc["schema"] == "modscope.time/1"
    assert doc["clock"] == "perf_counter_ns" and doc["repeat"] == 5 and doc["warmup"] == 1
    assert set(doc["forward"]) == {"bare", "hooked", "layer_sum_ns", "coverage", "queued_ahead"}
    assert doc["forward"]["queued_ahead"] is None  # CPU: nothing to hold back
    slow = next(t for t in doc["layers"] if t["name"] == "slow")
    assert set(slow["forward"]) == {"self", "total", "share"}
    assert set(slow["forward"]["self"]) == {"median_ns", "p90_ns"}
    exact = virtual(tm.KnownTimes(), torch.randn(2, 8), backward=True, warmup=0, repeat=2)
    out = StringIO()
    from rich.console import Console

    Console(file=out, width=120, color_system=None).print(timing_view(exact, top=2))
    text = out.getvalue()
    assert "Slowest 2 of 7 modules" in text and "fast" in text and "slow" in text
    assert "pair.0" not in text and "~" not in text
    assert "per-layer self times add up to 30.000 ms = 100%" in text
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(timing_view(exact, top=None))
    text = out.getvalue()
    assert "Slowest 7 of 7" in text and "~0.000" in text and "below the timer's resolution" in text


@cuda
@pytest.mark.cuda
def test_cuda_events_one_sync_per_iteration(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    before = snapshot(model)
    report = modscope.time_layers(model, torch.randn(8, 3, 224, 224), device="cuda", backward=True, warmup=2,
                                  repeat=5, clock="events")
    assert_unchanged(model, before)
    iterations = 2 + 5 + 2 + 5  # bare warm-up and repeats, hooked warm-up and repeats
    assert len(calls) == iterations + 1 + 50  # plus the hold's calibration and the clock's resolution probe
    assert report.clock == "cuda_event" and report.device.startswith("cuda")
    assert report.resolution_ns >= 500
    assert report.layer("layer1.0.conv1").forward_self.median > 0
    # Held back until the forward is queued, the GPU runs its layers back to back: the per-layer times add up
    # to the hooked pass's GPU time (without the hold: 2.4x the unhooked pass on an H200, hook time on the CPU),
    # which is the unhooked one plus the events' own cost on the GPU (about 1.3 us each).
    forward = report.forward
    assert forward.queued_ahead == 1.0
    assert 0.9 < forward.layer_sum / forward.hooked.median < 1.05 and 0.8 < forward.coverage < 1.5


class GpuWork(nn.Module):
    """Two matrix products, one with 64x the arithmetic of the other, plus a layer that only spins the CPU."""

    def __init__(self):
        super().__init__()
        self.big, self.small = nn.Linear(4096, 4096), nn.Linear(4096, 64)
        self.cpu_only = tm.Spin(20, 0)

    def forward(self, x):
        return self.small(self.cpu_only(self.big(x)))


@cuda
@pytest.mark.cuda
def test_cuda_layer_times_are_gpu_work():
    report = modscope.time_layers(GpuWork(), torch.randn(8192, 4096), device="cuda", warmup=2, repeat=5)
    big, small, cpu_only = (report.layer(n).forward_self.median for n in ("big", "small", "cpu_only"))
    assert report.forward.queued_ahead == 1.0
    assert report.layers[0].name == "big" and big > 8 * small
    # 20 ms of CPU time with no GPU work in it: on the held-back GPU it takes next to nothing
    assert cpu_only < 1e6
