"""Device/dtype audit: mixed devices and dtypes, misplaced buffers, modes, non-finite weights, expectations."""
from __future__ import annotations

import torch
import torch.nn as nn

import modscope
from tests.contract import assert_unchanged, snapshot


def _bf16_with_fp32_norms():
    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 8))
    model.to(torch.bfloat16)
    model[1].float()
    return model


def test_fp32_islands_in_bf16_model():
    report = modscope.audit(_bf16_with_fp32_norms())
    (finding,) = [f for f in report.findings if f.code == "mixed_dtype"]
    assert "2 floating tensors are float32 in a mostly bfloat16 model" in finding.message
    assert "1.weight" in finding.message and "1.bias" in finding.message
    assert report.ok  # informative, not an error


def test_expect_dtype_fails_and_allow_exempts():
    model = _bf16_with_fp32_norms()
    failing = modscope.audit(model, expect_dtype="bfloat16")
    assert not failing.ok
    assert [f.code for f in failing.findings if f.severity.value == "error"] == ["dtype_mismatch"]
    assert modscope.audit(model, expect_dtype=torch.bfloat16, allow={"LayerNorm"}).ok
    assert modscope.audit(model, expect_dtype="bf16", allow={"1."}).ok


def test_integer_buffers_are_not_dtype_mismatches():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # num_batches_tracked is int64
    assert modscope.audit(model, expect_dtype="float32").ok


def test_mixed_devices_and_expect_device():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].to("meta")
    report = modscope.audit(model)
    assert any(f.code == "mixed_device" for f in report.findings)
    failing = modscope.audit(model, expect_device="cpu")
    (mismatch,) = [f for f in failing.findings if f.code == "device_mismatch"]
    assert "2 tensors are on meta, expected cpu" in mismatch.message
    assert not failing.ok


def test_buffer_on_other_device_than_its_parameters():
    model = nn.BatchNorm1d(3)
    model.running_mean = torch.zeros(3, device="meta")
    report = modscope.audit(model)
    # meta buffers are skipped (no data); use a real second device when one exists
    assert not any(f.code == "buffer_device" for f in report.findings)
    if torch.cuda.is_available():
        model = nn.BatchNorm1d(3)
        model.running_mean = torch.zeros(3, device="cuda")
        assert any(f.code == "buffer_device" for f in modscope.audit(model).findings)


def test_mixed_modes_names_topmost_modules():
    model = nn.Sequential(nn.Sequential(nn.Dropout(), nn.Dropout()), nn.Dropout())
    model.eval()
    model[0].train()
    (finding,) = modscope.audit(model).findings
    assert finding.code == "mixed_training_mode"
    assert "1 submodule(s) are in train mode: 0" in finding.message


def test_nonfinite_weights_are_errors():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
        model.bias[1] = float("nan")
    before = snapshot(model)
    report = modscope.audit(model)
    assert_unchanged(model, before)
    assert not report.ok
    assert sorted(f.name for f in report.findings if f.code == "nonfinite_weights") == ["bias", "weight"]
    assert report.to_dict()["ok"] is False


def test_clean_model_is_ok():
    report = modscope.audit(nn.Linear(3, 3), expect_device="cpu", expect_dtype="float32")
    assert report.ok and report.findings == ()
    assert report.devices == {"cpu": 12} and report.dtypes == {"float32": 12}


def test_float16_sum_overflow_is_not_reported_as_nonfinite():
    model = nn.Linear(100, 100).half()
    with torch.no_grad():
        model.weight.fill_(60000.0)  # finite, but the batch sum overflows float16
    assert not any(f.code == "nonfinite_weights" for f in modscope.audit(model).findings)


def test_nonfinite_found_among_many_small_tensors():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(500)])
    with torch.no_grad():
        model[321].bias[1] = float("-inf")
    (finding,) = [f for f in modscope.audit(model).findings if f.code == "nonfinite_weights"]
    assert finding.name == "321.bias" and "0 NaN and 1 Inf" in finding.message
