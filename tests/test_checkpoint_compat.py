"""``modscope check``: the dry run must agree with a real ``load_state_dict`` and leave the model untouched."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import modscope
from modscope.checkpoint.weights import load_weights
from modscope.cli import app
from modscope.errors import CheckpointError
from tests.checkpoint_files import Small, small_state, untied, write_safetensors, write_torch
from tests.contract import assert_unchanged, snapshot

STATE = small_state()


class WithExtraState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def get_extra_state(self):
        return {"calls": 1}

    def set_extra_state(self, state):
        pass


def _real(model: nn.Module, state: dict):
    """What torch itself says (strict=False, on a copy): (missing, unexpected)."""
    result = copy.deepcopy(model).load_state_dict(state, strict=False)
    return set(result.missing_keys), set(result.unexpected_keys)


def _check(model, state, tmp_path, fmt="torch", contract=True):
    path = (write_torch(tmp_path / "w.pt", state) if fmt == "torch" else
            write_safetensors(tmp_path / "w.safetensors", state))  # fmt: skip
    before = snapshot(model) if contract else None  # (the snapshot cannot read lazy parameters)
    report = modscope.check(model, str(path))
    if contract:
        assert_unchanged(model, before)
    return report


def _none_child():
    model = Small()
    model.body[2] = None
    return model


def _shared_submodule():
    model = nn.Sequential(nn.Linear(3, 3))
    model.add_module("again", model[0])
    return model


CASES = {
    "exact": (Small, lambda: STATE),
    "ddp prefix": (Small, lambda: {f"module.{k}": v for k, v in STATE.items()}),
    "compile prefix": (Small, lambda: {f"_orig_mod.{k}": v for k, v in STATE.items()}),
    "missing and extra": (Small, lambda: {**{k: v for k, v in STATE.items() if k != "body.0.bias"}, "extra.w": torch.ones(1)}),
    "non-persistent buffer saved": (Small, lambda: {**STATE, "positions": torch.arange(4)}),
    "key under a None submodule": (_none_child, lambda: STATE),
    "dotted key below a parameter": (Small, lambda: {**STATE, "body.0.weight.extra": torch.ones(1)}),
    "bare module name": (Small, lambda: {**STATE, "body": torch.ones(1)}),
    "shared submodule": (_shared_submodule, lambda: _shared_submodule().state_dict()),
    "extra state saved as tensor": (WithExtraState, lambda: {**WithExtraState().state_dict(), "_extra_state": torch.ones(1)}),
    "extra state on a plain module": (Small, lambda: {**STATE, "body._extra_state": torch.ones(1)}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_agrees_with_load_state_dict(tmp_path, case):
    make_model, make_state = CASES[case]
    model, state = make_model(), make_state()
    report = _check(model, state, tmp_path)
    missing, unexpected = _real(model, state)
    assert set(report.missing) == missing
    assert set(report.unexpected) == unexpected
    assert report.ok == (not missing and not unexpected)


def test_batchnorm_counter_follows_the_checkpoint_version(tmp_path):
    state = {k: v for k, v in STATE.items() if not k.endswith("num_batches_tracked")}
    assert _check(Small(), state, tmp_path, fmt="safetensors").ok  # no version: BatchNorm fills it in
    versioned = small_state()  # pickled state_dicts carry versions (BatchNorm 2 knows the counter)
    del versioned["body.1.num_batches_tracked"]
    report = _check(Small(), versioned, tmp_path)
    assert report.missing == ("body.1.num_batches_tracked",)
    assert set(report.missing) == _real(Small(), versioned)[0]


def test_shape_mismatches_raise_even_without_strict(tmp_path):
    state = dict(STATE, **{"body.0.weight": torch.zeros(7, 4)})
    report = _check(Small(), state, tmp_path)
    assert [(m.key, m.model_shape, m.checkpoint_shape) for m in report.shape_mismatches] == [
        ("body.0.weight", (6, 4), (7, 4))
    ]
    assert not report.ok
    with pytest.raises(RuntimeError, match="size mismatch"):
        copy.deepcopy(Small()).load_state_dict(state, strict=False)


def test_scalar_from_one_element_vector_and_lazy_parameters(tmp_path):
    model = nn.Module()
    model.scale = nn.Parameter(torch.tensor(1.0))
    model.lazy = nn.LazyLinear(3)
    state = {"scale": torch.tensor([2.0]), "lazy.weight": torch.ones(3, 5), "lazy.bias": torch.ones(3)}
    report = _check(model, state, tmp_path, contract=False)
    assert report.ok and not report.shape_mismatches
    assert isinstance(model.lazy.weight, nn.parameter.UninitializedParameter)


def test_dtype_casts_and_which_lose_precision(tmp_path):
    model = Small()
    model.body[0].to(torch.bfloat16)
    state = dict(STATE, **{"body.2.weight": STATE["body.2.weight"].half()})
    report = _check(model, state, tmp_path)
    casts = {c.key: (c.checkpoint_dtype, c.model_dtype, c.lossy) for c in report.dtype_casts}
    assert casts == {
        "body.0.weight": ("float32", "bfloat16", True),
        "body.0.bias": ("float32", "bfloat16", True),
        "body.2.weight": ("float16", "float32", False),
    }
    assert report.ok  # casts happen silently: the load succeeds


@pytest.mark.parametrize(
    "rename, strip, add",
    [(lambda k: f"module.{k}", "module.", ""), (lambda k: f"_orig_mod.module.{k}", "_orig_mod.module.", ""),
     (lambda k: k.removeprefix("model."), "", "model.")],
)  # fmt: skip
def test_prefix_suggestions(tmp_path, rename, strip, add):
    model = nn.Module()
    model.model = Small()
    expected = model.state_dict()
    state = {rename(k): v for k, v in expected.items()}
    report = _check(model, state, tmp_path)
    assert not report.ok
    assert (report.suggestion.strip, report.suggestion.add, report.suggestion.clean) == (strip, add, True)
    assert report.suggestion.fixes == len(expected)


def test_non_persistent_buffers_are_listed(tmp_path):
    report = _check(Small(), {**STATE, "positions": torch.arange(4)}, tmp_path)
    assert report.non_persistent_buffers == ("positions",) and report.unexpected == ("positions",)


def test_extra_state_that_cannot_be_seen_is_a_note(tmp_path):
    report = _check(WithExtraState(), WithExtraState().state_dict() | {}, tmp_path)
    assert any("_extra_state" in n for n in report.notes)


def test_load_weights_loads_values_and_explains_failures(tmp_path):
    model = Small()
    load_weights(model, str(write_safetensors(tmp_path / "w.safetensors", untied(STATE))))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, STATE[name])
    with pytest.raises(CheckpointError, match=r"does not load into Small: \d+ missing key\(s\) such as 'head"):
        load_weights(Small(), str(write_torch(tmp_path / "bad.pt", {k: v for k, v in STATE.items() if "head" not in k})))


def test_check_and_weights_on_the_command_line(tmp_path):
    good = write_torch(tmp_path / "good.pt", {"state_dict": STATE, "epoch": 1})
    ddp = write_torch(tmp_path / "ddp.pt", {f"module.{k}": v for k, v in STATE.items()})
    runner = CliRunner()
    ok = runner.invoke(app, ["check", "tests/checkpoint_files.py:Small", "--weights", str(good)])
    assert ok.exit_code == 0 and "OK: loads with strict=True" in ok.stdout
    bad = runner.invoke(app, ["check", "tests/checkpoint_files.py:Small", "--weights", str(ddp), "--json"])
    assert bad.exit_code == 1
    document = json.loads(bad.stdout)
    assert document["schema"] == "modscope.check/1" and document["ok"] is False
    assert document["suggestion"] == {"strip": "module.", "add": "", "fixes": len(STATE), "clean": True}
    text = runner.invoke(app, ["check", "tests/checkpoint_files.py:Small", "--weights", str(ddp)]).stdout
    assert "strip the prefix 'module.'" in text and "with strict=False" in text
    loaded = runner.invoke(app, ["summary", "tests/checkpoint_files.py:Small", "--weights", str(good), "--json"])
    assert loaded.exit_code == 0 and json.loads(loaded.stdout)["totals"]["params"] > 0
    refused = runner.invoke(app, ["summary", "tests/checkpoint_files.py:Small", "--weights", str(ddp)])
    assert refused.exit_code == 2 and "does not load into Small" in refused.stderr
