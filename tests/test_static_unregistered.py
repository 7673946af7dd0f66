"""Submodules hidden in plain lists/dicts are flagged with the parameters they hide (like plain tensors), and
lazy modules run with inputs are counted with their materialised shapes while the model stays lazy."""
from __future__ import annotations

import json
import time

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

import modscope
from tests.contract import assert_unchanged, snapshot


class EnsembleMLP(nn.Module):
    """torchview's EnsembleMLP bug: the members live in a plain list, so they are never registered."""

    def __init__(self, members: int = 4):
        super().__init__()
        self.members = [nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 100)) for _ in range(members)]
        self.heads = {"cls": nn.Linear(100, 10)}
        self.out = nn.Linear(100, 1)

    def forward(self, x):
        return self.out(sum(m(x) for m in self.members) + self.heads["cls"](x).sum(-1, keepdim=True))


MEMBER = 100 * 200 + 200 + 200 * 100 + 100


def _codes(report):
    return {w.name: w for w in report.warnings if w.code == "unregistered_module"}


def test_modules_in_a_plain_list_or_dict_are_flagged_with_their_parameters():
    model = EnsembleMLP()
    report = modscope.summary(model)
    found = _codes(report)
    assert set(found) == {"members", "heads"}
    assert f"4 unregistered submodule(s) (Sequential) with {4 * MEMBER:,} parameters" in found["members"].message
    assert "nn.ModuleList" in found["members"].message
    assert "1,010 parameters" in found["heads"].message and "nn.ModuleDict" in found["heads"].message
    assert report.totals.params == 101, "only the registered head is counted"
    assert modscope.summary(model, inputs=torch.randn(2, 100)).forward is not None  # they do run


def test_references_to_registered_modules_and_parameters_are_fine():
    model = nn.Module()
    model.a, model.b = nn.Linear(2, 2), nn.Linear(2, 2)
    model.order = [model.a, model.b]  # a common pattern: a list of references, each registered
    model.weights = (model.a.weight, model.b.weight)
    assert modscope.summary(model).warnings == ()


def test_shared_hidden_module_is_counted_once_and_dropout_is_flagged():
    model = nn.Module()
    hidden = nn.Linear(3, 3)
    model.first = [hidden, nn.Dropout(0.1)]
    model.second = {"again": hidden}
    found = _codes(modscope.summary(model))
    assert "2 unregistered submodule(s) (Dropout, Linear) with 12 parameters" in found["first"].message
    assert "with 0 parameters" in found["second"].message  # already counted above
    assert ".train()/.eval()" in found["first"].message


def test_plain_tensors_are_still_flagged():
    model = nn.Module()
    model.table = [torch.zeros(3)]
    assert [w.code for w in modscope.summary(model).warnings] == ["unregistered_tensor"]


def test_scan_stays_cheap_on_many_modules():
    model = nn.Sequential(*[nn.ReLU() for _ in range(50_000)])
    model[7].spare = [nn.Linear(2, 2)]
    start = time.perf_counter()
    report = modscope.summary(model, check_values=False)
    elapsed = time.perf_counter() - start
    assert list(_codes(report)) == ["7.spare"]
    assert elapsed < 60, f"{elapsed:.1f} s for 50,000 modules"


# --- lazy modules with inputs ----------------------------------------------------------------------------------


def _lazy():
    return nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2), nn.LazyBatchNorm1d())


def test_lazy_model_without_inputs_says_how_to_count_it():
    report = modscope.summary(_lazy())
    assert report.totals.params == 0 and report.totals.uninitialized_params == 6
    assert all("pass --input" in w.message for w in report.warnings if w.code == "uninitialized_parameter")


def test_lazy_model_with_inputs_reports_the_materialised_counts():
    for device in ("cpu", "meta"):
        model = _lazy()
        before = snapshot(model)
        report = modscope.summary(model, inputs=torch.randn(3, 5), device=device)
        assert_unchanged(model, before)  # classes included: still LazyLinear, tensors still uninitialized
        assert isinstance(model[0], nn.LazyLinear) and all(is_lazy(p) for p in model.parameters())
        params = (5 * 4 + 4) + (4 * 2 + 2) + (2 + 2)
        assert report.totals.params == params and report.totals.uninitialized_params == 0, device
        assert report.totals.buffers == 2 + 2 + 1  # running mean/var and num_batches_tracked
        assert report.module("").params_total == params and report.module("2").params == 10
        weight = next(p for p in report.parameters if p.name == "0.weight")
        assert weight.shape == (4, 5) and weight.numel == 20 and weight.bytes == 80
        (note,) = [w for w in report.warnings if w.name == "0.weight"]
        assert "materialised it as (4, 5)" in note.message and "left uninitialized" in note.message
        assert any("materialised 8 lazy tensor(s)" in n for n in report.forward.notes)
        assert report.forward.memory.to_dict()  # the estimate exists and counts them (below)


def test_memory_estimate_counts_the_materialised_parameters():
    lazy = modscope.summary(nn.Sequential(nn.LazyLinear(64)), inputs=torch.randn(2, 32)).forward.memory
    built = modscope.summary(nn.Sequential(nn.Linear(32, 64)), inputs=torch.randn(2, 32)).forward.memory
    assert lazy.to_dict() == built.to_dict()


def test_cli_lazy_model_with_input_shows_counts(cli, tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.LazyLinear(4), nn.ReLU())\n")
    result = cli("summary", f"{path}:build", "--input", "3,5", "--json", "--no-memory")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["totals"]["params"] == 24 and doc["totals"]["uninitialized_params"] == 0


def test_other_forward_analyses_leave_a_lazy_model_lazy():
    """Their first forward would materialise the lazy modules in place (LazyLinear -> Linear): they run a copy."""
    analyses = {
        "grads": lambda m, x: modscope.grads(m, x),
        "find_nonfinite": lambda m, x: modscope.find_nonfinite(m, x),
        "time_layers": lambda m, x: modscope.time_layers(m, x, warmup=0, repeat=1),
        "graph": lambda m, x: modscope.graph(m, inputs=x),
    }
    for name, run in analyses.items():
        model = _lazy()
        before = snapshot(model)
        assert run(model, torch.randn(3, 5)) is not None
        assert_unchanged(model, before)
        assert isinstance(model[0], nn.LazyLinear), name
    assert "0.weight" in {p.name for p in modscope.grads(_lazy(), torch.randn(3, 5)).params}


def test_stateless_helpers_kept_in_a_dict_are_one_info_for_all_layers():
    class Kernels(nn.Module):  # like transformers' attention kernel table: a Func module, no tensors
        def forward(self, x):
            return x * 2

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self._kernel_funcs = {"eager": Kernels()}

    class WithDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.helpers = {"drop": nn.Dropout(0.1)}  # mode-dependent: .eval() not reaching it matters

    model = nn.Sequential(Attention(), Attention(), Attention(), WithDropout())
    findings = [w for w in modscope.summary(model).warnings if w.code == "unregistered_module"]
    assert [(w.name, w.severity.value) for w in findings] == [("3.helpers", "warning"), ("0._kernel_funcs", "info")]
    assert findings[1].message.startswith("0._kernel_funcs and 2 more like it: a plain dict holding")
