"""``summary``/``tree`` of a checkpoint alone and the checkpoint views, through the CLI and at a fixed width.

Regenerate golden files after an intended change with: MODSCOPE_UPDATE_GOLDEN=1 pytest tests/test_checkpoint_cli.py
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import modscope
from modscope.cli import app
from modscope.render.checkpoint import checkpoint_summary_view, checkpoint_tree_view, compat_view
from modscope.render.diff import diff_view
from tests.checkpoint_files import small_state, write_safetensors, write_torch
from tests.test_render_static import check_golden, render

STATE = small_state()


def _stack(layers: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    block = lambda: nn.TransformerEncoderLayer(16, 2, 32)  # noqa: E731
    return nn.Sequential(nn.Embedding(50, 16), *[block() for _ in range(layers)], nn.Linear(16, 50)).state_dict()


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in a temporary folder so reported paths are short and stable."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args):
    return CliRunner().invoke(app, list(args))


def test_summary_of_a_checkpoint(here):
    write_torch(here / "small.pt", STATE)
    result = _cli("summary", "small.pt")
    assert result.exit_code == 0, result.stderr
    assert "small.pt (torch)" in result.stdout and "1 tied name(s) share stored bytes" in result.stdout
    document = json.loads(_cli("summary", "small.pt", "--json").stdout)
    assert document["schema"] == "modscope.checkpoint/1"
    assert document["checkpoint"] == {"path": "small.pt", "format": "torch", "key": None,
                                      "candidates": [{"key": "", "tensors": 11}]}  # fmt: skip
    assert document["totals"]["tensors"] == 11 and document["shared"] == [
        {"names": ["embed.weight", "head.weight"], "kind": "tied"}
    ]
    assert [t["name"] for t in document["tensors"]] == list(STATE)
    assert document["tree"][0]["name"] == "" and document["tree"][0]["children"] == ["embed", "body", "head"]
    listing = _cli("summary", "small.pt", "--tensors").stdout
    assert "body.1.num_batches_tracked" in listing and "head.weight (= embed.weight)" in listing


def test_nested_checkpoints_on_the_command_line(here):
    write_torch(here / "ema.pt", {"model": STATE, "ema": STATE})
    ambiguous = _cli("summary", "ema.pt")
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr.strip() == (
        "modscope: error: ema.pt holds several state dicts; choose one with --key: model (11 tensors), ema (11 tensors)"
    )
    chosen = _cli("summary", "ema.pt", "--key", "ema")
    assert chosen.exit_code == 0 and "ema.pt (torch, key ema)" in chosen.stdout
    assert "also in this file (choose with --key): model (11 tensors)" in chosen.stdout
    tree = _cli("tree", "ema.pt", "--key", "model", "--json")
    assert json.loads(tree.stdout)["schema"] == "modscope.checkpoint_tree/1"


def test_whole_model_files_still_go_to_the_model_summary(here):
    torch.save(nn.Sequential(nn.Linear(2, 3)), here / "whole.pt")
    refused = _cli("summary", "whole.pt")
    assert refused.exit_code == 2 and "--trust" in refused.stderr
    trusted = _cli("summary", "whole.pt", "--trust", "--json")
    assert trusted.exit_code == 0 and json.loads(trusted.stdout)["schema"] == "modscope.summary/1"
    both = _cli("summary", "whole.pt", "--weights", "whole.pt")
    assert both.exit_code == 2


def test_weights_on_a_checkpoint_is_a_usage_error(here):
    write_safetensors(here / "m.safetensors", STATE)
    result = _cli("summary", "m.safetensors", "--weights", "m.safetensors")
    assert result.exit_code == 2 and "is itself a checkpoint" in result.stderr


def test_checkpoint_summary_golden(here):
    write_safetensors(here / "stack.safetensors", _stack())
    report = modscope.inspect_checkpoint("stack.safetensors")
    check_golden("checkpoint_summary.txt", render(checkpoint_summary_view(report)))


def test_checkpoint_tree_golden(here):
    write_torch(here / "stack.pt", _stack())
    report = modscope.inspect_checkpoint("stack.pt")
    check_golden("checkpoint_tree.txt", render(checkpoint_tree_view(report, depth=3)))


def test_diff_golden(here):
    a = {"embed.weight": torch.arange(12.0).reshape(3, 4), "fc.weight": torch.ones(4, 4), "fc.bias": torch.zeros(4),
         "old": torch.zeros(2), "steps": torch.arange(3)}  # fmt: skip
    b = {"module." + k: v.clone() for k, v in a.items() if k != "old"}
    b["module.embed.weight"][0, :2] += 0.5
    b["module.fc.bias"] = torch.zeros(5)
    b["module.steps"] = a["steps"].int()
    b["module.new"] = torch.ones(1)
    write_torch(here / "a.pt", a)
    write_safetensors(here / "b.safetensors", b)
    check_golden("checkpoint_diff.txt", render(diff_view(modscope.diff("a.pt", "b.safetensors"))))


def test_check_golden(here):
    state = {f"module.{k}": v for k, v in STATE.items() if k != "body.2.bias"}
    state["module.body.0.weight"] = torch.zeros(5, 4)
    state["module.positions"] = torch.arange(4)
    write_torch(here / "ddp.pt", state)
    from tests.checkpoint_files import Small

    model = Small()
    model.body[2].to(torch.float16)
    report = modscope.check(model, "ddp.pt", target="net.py:Small")
    check_golden("checkpoint_check.txt", render(compat_view(report)))
