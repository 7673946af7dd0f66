"""Audit without false alarms: -inf attention-mask buffers are infos, real NaN/Inf stays an error, and
``--allow CODE`` / ``allow=`` accepts any finding code (unknown values refused, exit 2)."""
from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.errors import UsageError
from modscope.reports import Severity
from modscope.reports.static import FINDING_CODES

T = 6


class Causal(nn.Module):
    """A standard causal mask buffer next to a linear layer."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(T, T)
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))

    def forward(self, x):
        return (self.proj(x) + self.mask).softmax(-1)


def _by_code(report):
    return {f.code: f for f in report.findings}


def test_minus_inf_mask_buffer_is_an_info_not_an_error():
    report = modscope.audit(Causal())
    assert report.ok
    finding = _by_code(report)["mask_buffer"]
    assert finding.name == "mask" and finding.severity is Severity.INFO
    assert f"{T * (T - 1) // 2} of {T * T} values are -inf" in finding.message
    assert "nonfinite_weights" not in _by_code(report)
    assert report.to_dict()["ok"] is True


def test_big_mask_buffer_checked_on_its_own_is_a_mask_too():
    model = nn.Module()
    model.register_buffer("mask", torch.full((300, 300), float("-inf")).triu(1))  # >= 65,536: reduced alone
    assert modscope.audit(model).ok


def test_mask_with_nan_or_plus_inf_stays_an_error():
    for bad in (float("nan"), float("inf")):
        model = Causal()
        model.mask[0, 0] = bad
        report = modscope.audit(model)
        assert not report.ok
        assert _by_code(report)["nonfinite_weights"].name == "mask"
        assert "mask_buffer" not in _by_code(report)


def test_parameter_holding_minus_inf_stays_an_error():
    model = Causal()
    with torch.no_grad():
        model.proj.weight[0, 0] = float("-inf")
    report = modscope.audit(model)
    assert not report.ok and _by_code(report)["nonfinite_weights"].name == "proj.weight"


def test_summary_names_the_mask_without_an_error():
    report = modscope.summary(Causal())
    (finding,) = [w for w in report.warnings if w.name == "mask"]
    assert finding.code == "mask_buffer" and finding.severity is Severity.INFO


def test_allow_accepts_any_finding_code():
    model = Causal()
    model.proj.eval()  # mixed modes: a warning
    with torch.no_grad():
        model.proj.bias[0] = float("nan")  # an error
    assert not modscope.audit(model).ok
    report = modscope.audit(model, allow={"nonfinite_weights", "mixed_training_mode"})
    assert report.ok
    codes = _by_code(report)
    for code in ("nonfinite_weights", "mixed_training_mode"):
        assert codes[code].severity is Severity.INFO and f"--allow {code}" in codes[code].message
    assert not modscope.audit(model, allow={"mixed_training_mode"}).ok, "only the named code is accepted"


def test_allow_codes_and_dtype_substrings_together():
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)).to(torch.bfloat16)
    model[1].float()
    model[0].eval()
    report = modscope.audit(model, expect_dtype="bf16", allow=["LayerNorm", "mixed_dtype"])
    assert report.ok
    assert {f.code: f.severity for f in report.findings} == {
        "mixed_dtype": Severity.INFO, "mixed_training_mode": Severity.WARNING
    }
    assert modscope.audit(model, expect_dtype="bf16", allow="LayerNorm").ok, "a single string is one value"


def test_unknown_allow_values_are_refused():
    with pytest.raises(UsageError, match="'nonfinite_weight' is not a finding code .*nonfinite_weights"):
        modscope.audit(Causal(), allow={"nonfinite_weight"})
    # with --expect-dtype, a substring that matches nothing exempts nothing: the mismatch still fails
    assert not modscope.audit(Causal().double(), expect_dtype="float32", allow={"nrom"}).ok
    assert modscope.audit(Causal(), expect_dtype="float32", allow={"proj"}).ok


def test_every_finding_code_in_the_source_is_listed():
    """``--allow`` validates against FINDING_CODES: a new code missing from it could not be allowed."""
    root = Path(modscope.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Finding" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
                    found.add(first.value)
    assert found and found <= set(FINDING_CODES), sorted(found - set(FINDING_CODES))


# --- the real CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "masked.py"
    path.write_text(textwrap.dedent(f"""
        import torch, torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear({T}, {T})
                self.register_buffer("mask", torch.full(({T}, {T}), float("-inf")).triu(1))

        def broken():
            net = Net()
            with torch.no_grad():
                net.proj.weight[0, 0] = float("nan")
            return net
    """))
    return path


def test_cli_causal_mask_passes_audit(cli, model_file):
    result = cli("audit", f"{model_file}:Net", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert [(f["code"], f["severity"]) for f in doc["findings"]] == [("mask_buffer", "info")]
    text = cli("audit", f"{model_file}:Net")
    assert text.returncode == 0 and "mask_buffer" in text.stdout and "nonfinite_weights" not in text.stdout


def test_cli_allow_code_turns_exit_1_into_0(cli, model_file):
    assert cli("audit", f"{model_file}:broken").returncode == 1
    result = cli("audit", f"{model_file}:broken", "--allow", "nonfinite_weights", "--json")
    assert result.returncode == 0, result.stderr
    severities = {f["code"]: f["severity"] for f in json.loads(result.stdout)["findings"]}
    assert severities == {"nonfinite_weights": "info", "mask_buffer": "info"}


def test_cli_unknown_allow_code_exits_2_with_one_line(cli, model_file):
    result = cli("audit", f"{model_file}:Net", "--allow", "nan_weights")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: --allow 'nan_weights' is not a finding code")
    assert "nonfinite_weights" in lines[0] and "mixed_training_mode" in lines[0]
    assert "Traceback" not in result.stderr
