"""Hugging Face/timm targets that would not fit in memory are refused before any weight is allocated, and
``summary`` of a config folder runs its forward pass on meta (a 70B config was killed for memory before)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modscope.cli import app

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config.architectures = ["LlamaForCausalLM"]
    path = tmp_path_factory.mktemp("llama")
    config.save_pretrained(path)
    return path


def test_a_model_bigger_than_a_third_of_the_memory_is_refused_in_one_line(folder):
    result = CliRunner().invoke(app, ["grads", str(folder)], env={"MODSCOPE_AVAILABLE_MEMORY_BYTES": "300000"})
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "more than a third of the 293.0 KiB of memory available" in message, message
    assert "modscope summary` runs on meta without weights" in message
    fine = CliRunner().invoke(app, ["grads", str(folder)], env={"MODSCOPE_AVAILABLE_MEMORY_BYTES": str(10**9)})
    assert fine.exit_code in (0, 1), fine.output


def test_summary_of_a_config_folder_runs_its_forward_pass_on_meta(folder):
    result = CliRunner().invoke(app, ["summary", str(folder), "--seq-len", "16", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["forward"]["device"] == "meta"
    assert {p["device"] for p in document["parameters"]} == {"meta"}
    meta = [w for w in document["warnings"] if w["code"] == "meta_tensor"]
    assert meta and meta[0]["severity"] == "info"
    on_cpu = CliRunner().invoke(app, ["summary", str(folder), "--seq-len", "16", "--device", "cpu", "--json"])
    assert json.loads(on_cpu.output)["forward"]["device"] == "cpu"  # asked for: built with real weights
