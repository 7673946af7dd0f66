"""Static summary on every bundled example: totals match PyTorch's own deduplicated counts and torchinfo."""
from __future__ import annotations

import pytest

import modscope
from examples.catalog import EXAMPLES
from tests.contract import assert_unchanged, snapshot

torchinfo = pytest.importorskip("torchinfo")


def _unique(tensors):
    return {id(t): t for t in tensors}.values()


@pytest.fixture(params=EXAMPLES, ids=lambda e: e.name)
def example(request):
    if "needs_torchvision" in request.param.notes:
        pytest.importorskip("torchvision")
    return request.param


def test_totals_match_pytorch(example):
    model = example.build()
    report = modscope.summary(model)
    params = list(_unique(model.parameters()))
    buffers = list(_unique(model.buffers()))
    assert report.totals.params == sum(p.numel() for p in params)
    assert report.totals.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert report.totals.frozen_params == sum(p.numel() for p in params if not p.requires_grad)
    assert report.totals.param_bytes == sum(p.numel() * p.element_size() for p in params)
    assert report.totals.buffers == sum(b.numel() for b in buffers)
    assert report.totals.modules == len(list(model.modules()))
    assert [p.name for p in report.parameters] == [n for n, _ in model.named_parameters()]
    assert [b.name for b in report.buffers] == [n for n, _ in model.named_buffers()]
    assert report.modules[0].params_total == report.totals.params


def test_totals_agree_with_torchinfo(example):
    model = example.build()
    report = modscope.summary(model)
    tied = any(g.kind.value == "tied" for g in report.shared)
    assert tied == ("tied" in example.notes), "the catalogue's 'tied' note must match the model"
    if tied:
        pytest.skip("torchinfo counts a tied parameter once per name")
    stats = torchinfo.summary(model, verbose=0)
    assert report.totals.params == stats.total_params
    assert report.totals.trainable_params == stats.trainable_params


def test_summary_leaves_model_untouched(example):
    model = example.build()
    before = snapshot(model)
    modscope.summary(model)
    modscope.audit(model)
    assert_unchanged(model, before)


def test_plain_tensor_constant_is_flagged():
    example = next(e for e in EXAMPLES if e.name == "fixed_hidden_mlp")
    report = modscope.summary(example.build())
    flagged = [w for w in report.warnings if w.code == "unregistered_tensor"]
    assert [w.name for w in flagged] == ["rand_weight"]
    assert "state_dict" in flagged[0].message


def test_chimera_flags_nested_constant_by_full_name():
    example = next(e for e in EXAMPLES if e.name == "chimera")
    report = modscope.summary(example.build())
    assert [w.name for w in report.warnings if w.code == "unregistered_tensor"] == ["2.rand_weight"]


def test_frozen_backbone_split():
    pytest.importorskip("torchvision")
    example = next(e for e in EXAMPLES if e.name == "resnet18_finetune")
    model = example.build()
    report = modscope.summary(model)
    head = sum(p.numel() for p in model.layer4.parameters()) + sum(p.numel() for p in model.fc.parameters())
    assert report.totals.trainable_params == head
    assert report.module("layer1").trainable_total == 0
    assert report.module("fc").trainable_total == report.module("fc").params_total == 512 * 5 + 5


def test_hand_rolled_sequential_children_are_seen():
    example = next(e for e in EXAMPLES if e.name == "my_sequential")
    report = modscope.summary(example.build())
    assert report.module("").children == ("0", "1", "2")
    assert report.module("0").type == "Linear"


def test_parameter_containers_are_counted():
    for name in ("param_list_dense", "param_dict_dense"):
        model = next(e for e in EXAMPLES if e.name == name).build()
        report = modscope.summary(model)
        assert report.totals.params == sum(p.numel() for p in model.parameters()) > 0
        assert not report.warnings
