"""Per-layer timing: self vs total, forward and backward, against layers whose cost is known."""
from __future__ import annotations

import json
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

    def mark(self) -> int:
        return tm.VIRTUAL_NS[0]

    def reset(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def since(self, start: int, mark: int) -> float:
        return float(mark - start)


@pytest.fixture
def virtual(monkeypatch):
    """time_layers with the virtual clock: returns a function like time_layers(model, inputs, ...)."""
    import modscope.collect.timing as timing

    monkeypatch.setattr(tm, "VIRTUAL_NS", [0])
    monkeypatch.setattr(timing, "clock_for", lambda device: VirtualClock())
    return modscope.time_layers


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
    assert set(doc["forward"]) == {"bare", "hooked", "layer_sum_ns", "coverage"}
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
                                  repeat=5)
    assert_unchanged(model, before)
    iterations = 2 + 5 + 2 + 5  # bare warm-up and repeats, hooked warm-up and repeats
    assert len(calls) == iterations + 50  # plus the clock's resolution probe
    assert report.clock == "cuda_event" and report.device.startswith("cuda")
    assert report.resolution_ns >= 500
    assert report.layer("layer1.0.conv1").forward_self.median > 0
    assert 0.5 < report.forward.coverage < 2.0


@cuda
@pytest.mark.cuda
def test_cuda_known_times_forward():
    report = modscope.time_layers(tm.KnownTimes(), torch.randn(2, 8), device="cuda", warmup=1, repeat=3)
    assert report.layers[0].name == "slow"
