"""NaN/Inf tracing: the first offending module in forward and backward, named, with its inputs' statistics."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.errors import ForwardError, UsageError
from modscope.render.json import dumps
from modscope.reports import Origin
from tests import training_models as tm
from tests.contract import assert_unchanged, snapshot
from tests.test_grads_watch import tensor_hooks


def positive_and_negative(rows=4) -> torch.Tensor:
    """fc1 inputs for which NanInLayer's log certainly sees negative values (weights set below)."""
    return torch.linspace(-1, 1, rows * 8).reshape(rows, 8)


def nan_in_layer() -> tm.NanInLayer:
    model = tm.NanInLayer()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(8))
        model.fc1.bias.zero_()
    return model


def test_first_nan_module_is_named_with_input_stats():
    report = modscope.find_nonfinite(nan_in_layer(), positive_and_negative())
    event = report.forward
    assert (event.module, event.type, event.tensor, event.origin) == ("log", "Log", "output", Origin.MODULE)
    assert event.call == 1
    assert event.later == 2  # fc2's output and the model's output follow
    (inp,) = event.inputs
    assert inp.label == "input 0" and inp.shape == (4, 8) and inp.dtype == "float32"
    assert inp.min == pytest.approx(-1.0) and inp.max == pytest.approx(1.0)
    assert inp.mean == pytest.approx(0.0, abs=1e-6) and inp.nonfinite == 0
    (out,) = event.outputs
    assert out.nan == 16 and out.posinf == 0 and out.neginf == 0
    assert not report.ok


def test_nan_made_between_modules_is_seen_in_the_next_input():
    model = tm.NanBetweenModules()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(8))
        model.fc1.bias.zero_()
    event = modscope.find_nonfinite(model, positive_and_negative()).forward
    assert event.module == "fc2" and event.origin is Origin.INPUT
    assert event.inputs[0].nan == 16


def test_backward_inf_is_attributed_to_the_module_that_made_it():
    model = tm.InfInBackward()
    with torch.no_grad():
        model.fc1.bias[0] = -100.0  # relu outputs exact zeros there: sqrt's derivative is infinite
    report = modscope.find_nonfinite(model, torch.randn(16, 8))
    assert report.forward is None
    event = report.backward
    assert (event.module, event.type, event.tensor, event.origin) == ("sqrt", "Sqrt", "grad of input 0",
                                                                      Origin.MODULE)
    assert float("inf") in (abs(event.min), abs(event.max))


def test_backward_nan_from_code_between_modules():
    model = tm.NanGradBetweenModules()
    with torch.no_grad():
        model.fc.bias.fill_(1.0)  # relu passes everything, so the NaN gradient reaches fc's output
        model.fc.weight.zero_()
    event = modscope.find_nonfinite(model, torch.randn(4, 8)).backward
    assert event.module == "fc" and event.origin is Origin.DOWNSTREAM and event.tensor == "grad of output"


def test_nonfinite_loss_gradient_at_the_root():
    class Identity(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    model = Identity()
    with modscope.detect_nonfinite(model) as det:
        out = model(torch.randn(3, 2))
        torch.sqrt(out * 0).sum().backward()  # the loss's gradient is infinite
    event = det.report().backward
    assert event.module == "" and event.origin is Origin.DOWNSTREAM


def test_all_finite():
    torch.manual_seed(0)
    for model in (tm.InplaceReLU(), tm.ReusedBlock(), tm.WithBatchNorm()):
        report = modscope.find_nonfinite(model, torch.randn(4, 8))
        assert report.ok and report.forward is None and report.backward is None
        assert report.forward_passes == 1 and report.checked_backward


def test_reused_module_reports_the_offending_call():
    class ReusedLog(nn.Module):
        def __init__(self):
            super().__init__()
            self.log = tm.Log()

        def forward(self, x):
            y = self.log(x.abs() + 1)  # first call: finite
            return self.log(y - 10)  # second call: log of negatives

    event = modscope.find_nonfinite(ReusedLog(), torch.randn(3, 4), backward=False).forward
    assert event.module == "log"
    assert event.inputs[0].max < 0  # the statistics are those of the second call's input
    assert event.later == 1  # the root's output


def test_training_loop_finds_the_step():
    torch.manual_seed(0)
    model = nan_in_layer()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with modscope.detect_nonfinite(model) as det:
        for step in range(1, 5):
            x = torch.ones(2, 8) if step < 3 else positive_and_negative(2)
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == 2:
                assert not det.found
    report = det.report()
    assert report.forward.call == 3 and report.forward.module == "log"
    assert report.backward.call == 3
    assert report.forward_passes == 4


def test_detector_does_not_disturb_training():
    torch.manual_seed(0)
    watched = tm.InplaceReLU()
    plain = copy.deepcopy(watched)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 8, generator=gen) for _ in range(4)]
    for model, detect in ((watched, True), (plain, False)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        with (modscope.detect_nonfinite(model) if detect else torch.enable_grad()):
            for x in xs:
                model(x).pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
    for a, b in zip(watched.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    assert not tensor_hooks(watched)


def test_hooks_removed_and_leaf_inputs_clean():
    model = tm.InplaceReLU()
    x = torch.randn(2, 8, requires_grad=True)
    before = snapshot(model)
    with modscope.detect_nonfinite(model):
        model(x).sum().backward()
    assert_unchanged_except_grads(model, before)
    assert not x._backward_hooks
    assert not tensor_hooks(model)


def assert_unchanged_except_grads(model, before):
    for name, (_training, hooks) in before["modules"].items():
        assert snapshot(model)["modules"][name][1] == hooks


def test_forward_only_and_inference_mode():
    with torch.inference_mode():
        with modscope.detect_nonfinite(nan_in_layer(), backward=False) as det:
            det.model(positive_and_negative())
    report = det.report()
    assert report.forward.module == "log" and not report.checked_backward and report.backward is None


def test_find_nonfinite_contract_and_errors():
    model = nan_in_layer()
    model.fc2.weight.grad = torch.ones_like(model.fc2.weight)
    before = snapshot(model)
    modscope.find_nonfinite(model, positive_and_negative())
    assert_unchanged(model, before)

    raising = tm.Raises()
    before = snapshot(raising)
    with pytest.raises(ForwardError, match="boom"):
        modscope.find_nonfinite(raising, torch.randn(2, 8))
    assert_unchanged(raising, before)

    report = modscope.find_nonfinite(tm.NanThenRaises(), torch.randn(4, 8) - 5)
    assert report.forward.module == "log" and "loss diverged" in report.error and report.loss_value is None

    with pytest.raises(UsageError):
        modscope.detect_nonfinite(object())


def test_multi_output_labels():
    class TwoOut(nn.Module):
        def forward(self, x):
            return {"ok": x, "bad": torch.log(x)}

    event = modscope.find_nonfinite(TwoOut(), -torch.ones(2, 2), backward=False).forward
    assert event.tensor == "output['bad']" and event.module == ""


def test_json_document():
    doc = json.loads(dumps(modscope.find_nonfinite(nan_in_layer(), positive_and_negative())))
    assert doc["schema"] == "modscope.nan/1" and doc["ok"] is False
    assert doc["forward"]["module"] == "log" and doc["forward"]["origin"] == "module"
    assert doc["forward"]["inputs"][0]["nonfinite"] == 0
    assert doc["forward"]["outputs"][0]["nan"] == 16
    assert doc["backward"]["phase"] == "backward"
    assert doc["loss"] == {"kind": "mean", "value": "nan"}


def test_cheap_compared_to_detect_anomaly():
    """Not a benchmark (bench/training.py measures it): only a sanity bound that catches a per-module sync.

    Both sides are timed as CPU time of this thread with torch on one thread: wall time on a loaded machine
    measures the neighbours (best-of-5 wall ratios ranged 0.5-2 at load 11), and with more threads than free
    cores every small op waits for a busy core. On one thread the ratio held at 1.46-1.52 under that load."""
    import time

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(30)])
    x = torch.randn(32, 64)

    def step():
        model(x).sum().backward()  # CPU autograd runs on the calling thread: thread_time sees all of it

    def best(fn, n=5):
        times = []
        for _ in range(n):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        return min(times)

    def anomaly():
        with torch.autograd.detect_anomaly(check_nan=True):
            step()

    def ours():
        with modscope.detect_nonfinite(model):
            step()

    import warnings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert best(ours) < best(anomaly)
    finally:
        torch.set_num_threads(threads)


def test_detector_and_watch_are_entered_once():
    model = nn.Linear(2, 2)
    det = modscope.detect_nonfinite(model)
    with det:
        model(torch.ones(1, 2))
    with pytest.raises(UsageError, match="entered once"):
        det.__enter__()
    watch = modscope.watch_gradients(model)
    with watch:
        pass
    with pytest.raises(UsageError, match="entered once"):
        watch.__enter__()
