"""One-shot gradient flow (``modscope.grads``): verdicts, aggregates, thresholds and the no-side-effect contract."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.errors import ForwardError, UsageError
from modscope.render.json import dumps
from modscope.reports import GradStatus, GradThresholds
from tests import training_models as tm
from tests.contract import assert_unchanged, snapshot


def statuses(report) -> dict[str, str]:
    return {p.name: p.status.value for p in report.params}


def test_unused_branch_is_no_grad_and_fails():
    model = tm.UnusedBranch()
    report = modscope.grads(model, torch.randn(4, 8))
    assert statuses(report) == {
        "used.weight": "ok", "used.bias": "ok", "unused.weight": "no_grad", "unused.bias": "no_grad",
        "head.weight": "ok", "head.bias": "ok",
    }
    assert not report.ok
    assert [p.name for p in report.problems] == ["unused.weight", "unused.bias"]
    assert report.module("unused").status is GradStatus.NO_GRAD and report.module("unused").norm is None
    assert report.counts() == {"no_grad": 2, "ok": 4}


def test_detached_branch_is_no_grad():
    report = modscope.grads(tm.DetachedBranch(), torch.randn(4, 8))
    assert statuses(report) == {"encoder.weight": "no_grad", "encoder.bias": "no_grad",
                                "head.weight": "ok", "head.bias": "ok"}


def test_zero_gradient():
    report = modscope.grads(tm.ZeroGrad(), torch.randn(4, 8))
    assert report.param("scale").status is GradStatus.ZERO
    assert report.param("scale").norm == 0.0 and not report.ok


def test_nonfinite_gradient():
    report = modscope.grads(tm.NanInLayer(), torch.randn(4, 8))
    assert report.param("fc2.weight").status is GradStatus.NONFINITE
    assert math.isnan(report.loss_value)
    assert not report.ok


def test_values_match_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(6, 5)
    report = modscope.grads(model, x, loss="sum")
    model(x).sum().backward()
    for name, p in model.named_parameters():
        rec = report.param(name)
        assert rec.norm == pytest.approx(p.grad.norm().item(), rel=1e-5)
        assert rec.max_abs == pytest.approx(p.grad.abs().max().item(), rel=1e-5)
        assert rec.mean_abs == pytest.approx(p.grad.abs().mean().item(), rel=1e-5)
        assert rec.weight_norm == pytest.approx(p.detach().norm().item(), rel=1e-5)
        assert rec.ratio == pytest.approx(rec.norm / rec.weight_norm)
    layer = report.module("0")
    expected = math.sqrt(model[0].weight.grad.norm() ** 2 + model[0].bias.grad.norm() ** 2)
    assert layer.norm == pytest.approx(expected, rel=1e-5)
    assert layer.max_abs == max(report.param("0.weight").max_abs, report.param("0.bias").max_abs)
    assert [m.name for m in report.modules] == ["0", "2"]  # only modules owning parameters


def test_losses():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    assert modscope.grads(model, x, loss="sum").loss_value == pytest.approx(model(x).sum().item(), rel=1e-5)
    assert modscope.grads(model, x, loss="mean").loss_value == pytest.approx(model(x).mean().item(), rel=1e-5)
    target = torch.tensor([0, 1, 2, 0, 1])
    report = modscope.grads(model, x, loss="cross-entropy", target=target)
    expected = nn.functional.cross_entropy(model(x), target).item()
    assert report.loss_value == pytest.approx(expected, rel=1e-5)
    with pytest.raises(UsageError, match="shape"):
        modscope.grads(model, x, loss="cross-entropy", target=torch.zeros(4, dtype=torch.long))
    with pytest.raises(UsageError, match=r"\[0,3\)"):
        modscope.grads(model, x, loss="cross-entropy", target=torch.full((5,), 7))
    with pytest.raises(UsageError, match="expected one of"):
        modscope.grads(model, x, loss="hinge")


def test_loss_function():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])

    def cross_entropy(logits):
        return nn.functional.cross_entropy(logits, labels)

    report = modscope.grads(model, x, loss=cross_entropy)
    assert report.loss == "cross_entropy"
    assert report.loss_value == pytest.approx(cross_entropy(model(x)).item(), rel=1e-5)
    cross_entropy(model(x)).backward()
    assert report.param("weight").norm == pytest.approx(model.weight.grad.norm().item(), rel=1e-5)
    assert modscope.grads(model, x, loss=lambda out: out.pow(2).sum()).loss == "<lambda>"
    with pytest.raises(UsageError, match=r"the loss function returned \(5, 3\); it must return a scalar tensor"):
        modscope.grads(model, x, loss=lambda out: out)


def test_thresholds_are_configurable_and_reported():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    assert modscope.grads(model, x).ok
    high = modscope.grads(model, x, thresholds=GradThresholds(vanishing=1e-8, exploding=1e-6))
    assert set(statuses(high).values()) == {"exploding"} and high.ok  # a warning, not a failure
    low = modscope.grads(model, x, thresholds=GradThresholds(vanishing=1e6, exploding=1e7))
    assert set(statuses(low).values()) == {"vanishing"} and low.ok
    doc = json.loads(dumps(high))
    assert doc["thresholds"] == {"vanishing": 1e-8, "exploding": 1e-6}


def test_frozen_backbone_is_not_a_problem():
    pytest.importorskip("torchvision")
    from examples.resnet_finetune import resnet18_finetune

    model = resnet18_finetune()
    report = modscope.grads(model, torch.randn(2, 3, 224, 224), loss="cross-entropy")
    assert report.ok
    frozen = [p for p in report.params if p.status is GradStatus.FROZEN]
    assert frozen and all(not p.requires_grad and p.norm is None for p in frozen)
    assert all(p.name.startswith(("layer4.", "fc.")) for p in report.params if p.status is GradStatus.OK)
    assert report.module("conv1").status is GradStatus.FROZEN


def test_inplace_relu_and_reused_module():
    report = modscope.grads(tm.InplaceReLU(), torch.randn(4, 8))
    assert report.ok and len(report.params) == 6
    report = modscope.grads(tm.ReusedBlock(), torch.randn(4, 8))
    assert report.ok and report.param("block.0.weight").status is GradStatus.OK


def test_tied_parameters_listed_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    report = modscope.grads(model, torch.tensor([[1, 2, 3]]))
    assert [p.name for p in report.params] == ["0.weight"]
    assert report.param("1.weight").shared_with == ("1.weight",)


def test_torchvision_zero_initialised_head():
    """vit_b_16's classification head starts at zero, so at step 0 no gradient flows into the trunk."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.vit_b_16()
    report = modscope.grads(model, torch.randn(1, 3, 224, 224))
    assert report.param("heads.head.bias").status is GradStatus.OK
    assert report.param("encoder.layers.encoder_layer_0.mlp.0.weight").status is GradStatus.ZERO
    assert not report.ok


def _example_ids():
    from examples.catalog import EXAMPLES

    return [e.name for e in EXAMPLES]


# Examples whose gradients fail for a reason of their own, not modscope's: ParamDictDense uses one of its
# parameters per call, so the others get none.
EXAMPLE_PROBLEMS = {"param_dict_dense": {"no_grad"}}


@pytest.mark.parametrize("name", _example_ids())
def test_examples(name):
    from examples.catalog import get
    from modscope.load.inputs import build_inputs

    example = get(name)
    if "needs_torchvision" in example.notes:
        pytest.importorskip("torchvision")
    model = example.build()
    inputs = build_inputs(example.inputs, [f"{k}={v}" for k, v in example.kwargs])
    before = snapshot(model)
    report = modscope.grads(model, inputs)
    assert_unchanged(model, before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {p.name for p in report.params if p.requires_grad} <= trainable
    assert {p.status.value for p in report.problems} == EXAMPLE_PROBLEMS.get(name, set())


def test_grad_left_exactly_as_found():
    model = tm.WithBatchNorm()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    before = snapshot(model)
    stats = (model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone())
    x = torch.randn(4, 8)
    rng = torch.get_rng_state()
    modscope.grads(model, x)
    assert_unchanged(model, before)
    assert model.head.weight.grad is None
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(model.bn.num_batches_tracked, stats[1])
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew numbers; the user's stream is unchanged


def test_contract_when_forward_raises():
    model = tm.Raises()
    model.eval()
    before = snapshot(model)
    with pytest.raises(ForwardError, match="boom"):
        modscope.grads(model, torch.randn(2, 8))
    assert_unchanged(model, before)


def test_no_gradient_at_all():
    class NoGradForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            with torch.no_grad():
                return self.fc(x)

    report = modscope.grads(NoGradForward(), torch.randn(2, 4))
    assert report.loss_value is None
    assert set(statuses(report).values()) == {"no_grad"}


def test_runs_under_no_grad_context():
    with torch.no_grad():
        report = modscope.grads(nn.Linear(3, 2), torch.randn(2, 3))
    assert report.ok


def test_json_document():
    doc = json.loads(dumps(modscope.grads(tm.UnusedBranch(), torch.randn(2, 8))))
    assert doc["schema"] == "modscope.grads/1"
    assert doc["ok"] is False
    assert doc["loss"]["kind"] == "mean"
    assert doc["counts"] == {"no_grad": 2, "ok": 4}
    param = next(p for p in doc["params"] if p["name"] == "unused.weight")
    assert param == {"name": "unused.weight", "module": "unused", "shape": [4, 8], "numel": 32,
                     "requires_grad": True, "status": "no_grad", "norm": None, "max_abs": None,
                     "mean_abs": None, "weight_norm": None, "ratio": None, "shared_with": []}
    assert {m["name"] for m in doc["modules"]} == {"used", "unused", "head"}


def test_rejects_non_modules():
    with pytest.raises(UsageError):
        modscope.grads("model", torch.randn(1))


def test_sparse_embedding_gradient():
    model = nn.Embedding(10, 3, sparse=True)
    report = modscope.grads(model, torch.tensor([[1, 1, 4]]), loss="sum")
    model(torch.tensor([[1, 1, 4]])).sum().backward()
    dense = model.weight.grad.to_dense()
    rec = report.param("weight")
    assert rec.status is GradStatus.OK
    assert rec.norm == pytest.approx(dense.norm().item())
    assert rec.max_abs == pytest.approx(dense.abs().max().item())
    assert rec.mean_abs == pytest.approx(dense.abs().mean().item())
