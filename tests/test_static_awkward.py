"""Awkward models: tied weights, shared submodules, parametrizations, lazy modules, deep and wide trees."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

import modscope
from tests.contract import assert_unchanged, snapshot


class TiedLM(nn.Module):
    def __init__(self, vocab=100, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight


def test_tied_embeddings_counted_once_and_reported():
    model = TiedLM()
    report = modscope.summary(model)
    assert report.totals.params == 100 * 16 + 16 * 16 + 16
    tied = [g for g in report.shared if g.kind.value == "tied"]
    assert [set(g.names) for g in tied] == [{"embed.weight", "head.weight"}]
    entry = next(p for p in report.parameters if p.name == "embed.weight")
    assert entry.shared_with == ("head.weight",)
    assert sum(m.params for m in report.modules) == report.totals.params


def test_submodule_under_two_parents():
    shared = nn.Linear(4, 4)
    model = nn.Module()
    model.a = nn.Sequential(shared, nn.ReLU())
    model.b = nn.Sequential(nn.ReLU(), shared)
    report = modscope.summary(model)
    assert report.totals.params == 20
    groups = sorted((g.kind.value, g.names) for g in report.shared)
    assert groups == [
        ("shared_module", ("a.0", "b.1")),
        ("tied", ("a.0.bias", "b.1.bias")),
        ("tied", ("a.0.weight", "b.1.weight")),
    ]
    assert report.module("b.1").name == "a.0"
    assert report.totals.modules == len(list(model.modules()))


def test_storage_aliases_through_views_and_data_assignment():
    model = nn.Module()
    model.big = nn.Parameter(torch.randn(8, 4))
    model.view = nn.Parameter(model.big.data[:4])  # a different Parameter over the same memory
    model.copy = nn.Linear(4, 4)
    model.copy.weight.data = model.big.data[4:]
    report = modscope.summary(model)
    aliases = [set(g.names) for g in report.shared if g.kind.value == "storage_alias"]
    assert aliases == [{"big", "view", "copy.weight"}]


def test_lstm_and_multihead_attention():
    for model in (nn.LSTM(10, 20, num_layers=2, bidirectional=True), nn.MultiheadAttention(32, 4)):
        report = modscope.summary(model)
        assert report.totals.params == sum(p.numel() for p in model.parameters())
        assert [p.name for p in report.parameters] == [n for n, _ in model.named_parameters()]


def test_parametrizations_weight_norm_and_spectral_norm():
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(5, 6)), parametrizations.spectral_norm(nn.Linear(6, 3)))
    report = modscope.summary(model)
    names = [p.name for p in report.parameters]
    assert names == [n for n, _ in model.named_parameters()]
    assert "0.parametrizations.weight.original0" in names
    assert report.totals.params == sum(p.numel() for p in model.parameters())
    assert report.totals.buffers == sum(b.numel() for b in model.buffers())  # spectral norm's u/v vectors


def test_lazy_modules_are_reported_not_crashed():
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    report = modscope.summary(model)
    lazy = [w for w in report.warnings if w.code == "uninitialized_parameter"]
    assert {w.name for w in lazy} == {"0.weight", "0.bias"}
    assert report.totals.uninitialized_params == 2
    assert report.totals.params == 8 * 2 + 2
    entry = next(p for p in report.parameters if p.name == "0.weight")
    assert entry.shape is None and entry.numel is None
    assert "uninitialized_parameter" in modscope.summary(model).to_dict()["warnings"][0]["code"]


def test_non_persistent_buffers_say_so():
    model = nn.Module()
    model.register_buffer("kept", torch.zeros(3))
    model.register_buffer("scratch", torch.zeros(5), persistent=False)
    report = modscope.summary(model)
    flags = {b.name: b.persistent for b in report.buffers}
    assert flags == {"kept": True, "scratch": False}
    assert set(model.state_dict()) == {"kept"}
    assert report.totals.buffers == 8


def test_empty_modules():
    for model in (nn.Module(), nn.Sequential(), nn.Identity()):
        report = modscope.summary(model)
        assert report.totals.params == 0 and report.totals.modules == 1
        assert report.to_dict()["modules"][0]["name"] == ""


def test_meta_tensors_are_flagged():
    with torch.device("meta"):
        model = nn.Linear(1000, 1000)
    report = modscope.summary(model)
    assert report.totals.params == 1000 * 1000 + 1000
    assert {w.code for w in report.warnings} == {"meta_tensor"}


def test_list_of_parameters_is_unregistered():
    model = nn.Module()
    model.weights = [nn.Parameter(torch.randn(2)), nn.Parameter(torch.randn(3))]
    report = modscope.summary(model)
    assert [w.name for w in report.warnings] == ["weights[0]", "weights[1]"]
    assert report.totals.params == 0


def _chain(depth: int) -> nn.Module:
    model = inner = nn.Sequential()
    for _ in range(depth):
        child = nn.Sequential(nn.Linear(1, 1))
        inner.append(child)
        inner = child
    return model


def test_two_thousand_deep_chain_has_no_recursion_error():
    model = _chain(2000)
    report = modscope.summary(model)
    assert report.totals.params == 2000 * 2
    assert max(m.depth for m in report.modules) == 2001
    assert modscope.audit(model).ok


def test_fifty_thousand_modules():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(16_667)])
    started = time.process_time()  # CPU seconds: on a loaded machine wall time also counts the neighbours
    report = modscope.summary(model)
    elapsed = time.process_time() - started
    assert report.totals.modules == 1 + 3 * 16_667
    assert report.totals.params == 16_667 * 6
    # speed is measured in bench/static.py; this only guards against accidental quadratic behaviour
    assert elapsed < 60, elapsed


def test_mixed_train_eval_and_nonfinite_in_summary():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    before = snapshot(model)
    report = modscope.summary(model)
    assert_unchanged(model, before)
    codes = {w.code: w for w in report.warnings}
    assert codes["mixed_training_mode"].name == "2"
    assert "1 NaN" in codes["nonfinite_weights"].message
