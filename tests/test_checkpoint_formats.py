"""Every checkpoint format through one interface: names, shapes, dtypes from metadata; values read lazily."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn as nn

from modscope.checkpoint import open_checkpoint
from modscope.collect.statedict.checkpoint import summarize_checkpoint
from modscope.errors import CheckpointError, UnsafeLoadError
from modscope.reports import SharedKind
from tests.checkpoint_files import (
    Small,
    small_state,
    untied,
    write_dcp,
    write_safetensors,
    write_sharded,
    write_torch,
)

STATE = small_state()


def _assert_holds(ckpt, state, prefix=""):
    entries = ckpt.entries()
    assert list(entries) == [prefix + k for k in state] or set(entries) == {prefix + k for k in state}
    for name, tensor in state.items():
        meta = entries[prefix + name]
        assert meta.shape == tuple(tensor.shape) and meta.dtype == tensor.dtype
        assert torch.equal(ckpt.read(prefix + name), tensor)
        flat = tensor.reshape(-1)
        if flat.numel() > 2:  # a range from the middle, element-exact
            out = torch.empty(flat.numel() - 2, dtype=tensor.dtype)
            ckpt.read_into(prefix + name, 1, out)
            assert torch.equal(out, flat[1:-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    out = {
        "torch": write_torch(d / "model.pt", STATE),
        "legacy": write_torch(d / "legacy.pt", STATE, legacy=True),
        "safetensors": write_safetensors(d / "model.safetensors", STATE),
        "index": write_sharded(d / "sharded", STATE),
        "index-bin": write_sharded(d / "sharded-bin", STATE, kind="bin"),
        "dcp": write_dcp(d / "dcp", {"model": STATE, "step": 7}),
    }
    for suffix in ("bin", "ckpt", "pth", "weights"):  # the content decides, not the name
        out[f"torch.{suffix}"] = shutil.copy(out["torch"], d / f"copy.{suffix}")
    out["safetensors-misnamed"] = shutil.copy(out["safetensors"], d / "weights.pt")
    return out


@pytest.mark.parametrize(
    "kind, fmt",
    [
        ("torch", "torch"), ("torch.bin", "torch"), ("torch.ckpt", "torch"), ("torch.pth", "torch"),
        ("torch.weights", "torch"), ("legacy", "torch-legacy"), ("safetensors", "safetensors"),
        ("safetensors-misnamed", "safetensors"), ("index", "index (safetensors shards)"),
        ("index-bin", "index (torch shards)"), ("dcp", "dcp"),
    ],
)  # fmt: skip
def test_every_format_reads_the_same_state(files, kind, fmt):
    with open_checkpoint(str(files[kind])) as ckpt:
        assert ckpt.format == fmt
        _assert_holds(ckpt, STATE)


def test_sharded_folder_and_dcp_folder_are_detected(files):
    with open_checkpoint(str(files["index"].parent)) as ckpt:
        assert ckpt.format.startswith("index") and len(ckpt.entries()) == len(STATE)
    with open_checkpoint(str(files["dcp"])) as ckpt:
        assert ckpt.key == "model"  # the non-tensor "step" does not make the root a state dict


def test_model_targets_and_modules_are_sources(tmp_path):
    torch.manual_seed(0)
    model = Small()
    with open_checkpoint(model) as ckpt:
        assert ckpt.format == "model"
        _assert_holds(ckpt, model.state_dict())
        assert "positions" not in ckpt.entries()  # non-persistent, as in state_dict()
    with open_checkpoint("tests/checkpoint_files.py:Small") as ckpt:
        assert set(ckpt.entries()) == set(STATE)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(3, 2))), str(scripted))
    with open_checkpoint(str(scripted)) as ckpt:
        assert ckpt.format == "torchscript" and set(ckpt.entries()) == {"0.weight", "0.bias"}


def test_dtypes_round_trip(tmp_path):
    state = {
        "bf16": torch.randn(3, 5).bfloat16(), "f16": torch.randn(7).half(), "f64": torch.randn(2, 2).double(),
        "i8": torch.randint(-5, 5, (9,), dtype=torch.int8), "u8": torch.randint(0, 255, (3,), dtype=torch.uint8),
        "b": torch.rand(5) > 0.5, "i64": torch.arange(6), "scalar": torch.tensor(3.5), "empty": torch.empty(0, 4),
    }  # fmt: skip
    for path in (write_torch(tmp_path / "d.pt", state), write_safetensors(tmp_path / "d.safetensors", state)):
        with open_checkpoint(str(path)) as ckpt:
            _assert_holds(ckpt, state)


def test_non_contiguous_and_view_tensors_in_torch_files(tmp_path):
    base = torch.randn(6, 4)
    state = {"t": base.t(), "rows": base[2:5], "base": base}
    with open_checkpoint(str(write_torch(tmp_path / "views.pt", state))) as ckpt:
        _assert_holds(ckpt, state)
        groups = summarize_checkpoint(ckpt).shared
    assert [set(g.names) for g in groups if g.kind is SharedKind.STORAGE] == [{"t", "rows", "base"}]


def test_tied_weights_are_found_in_torch_files_and_counted_once(files):
    with open_checkpoint(str(files["torch"])) as ckpt:
        summary = summarize_checkpoint(ckpt)
    assert [set(g.names) for g in summary.shared] == [{"embed.weight", "head.weight"}]
    assert {t.name: t.shared_with for t in summary.tensors}["head.weight"] == ("embed.weight",)
    assert summary.totals.tensors == len(STATE)
    assert summary.totals.numel == sum(t.numel() for k, t in STATE.items() if k != "head.weight")
    with open_checkpoint(str(files["safetensors"])) as ckpt:  # safetensors stores copies: nothing shared
        assert summarize_checkpoint(ckpt).shared == ()


def test_prefix_tree_and_totals(files):
    with open_checkpoint(str(files["legacy"])) as ckpt:  # a pickled dict keeps the state_dict order
        summary = summarize_checkpoint(ckpt)
    nodes = {n.name: n for n in summary.nodes}
    assert nodes[""].children == ("embed", "body", "head")
    assert nodes["body"].children == ("body.0", "body.1", "body.2")
    assert nodes["body.1"].tensors == 5 and nodes["body"].tensors_total == 9
    assert nodes[""].numel_total == sum(t.numel() for t in STATE.values())
    assert summary.totals.bytes_by_dtype == {
        "float32": sum(t.nbytes for k, t in STATE.items() if t.dtype == torch.float32 and k != "head.weight"),
        "int64": 8,
    }


class TestNestedCheckpoints:
    def test_lightning_layout_picks_state_dict(self, tmp_path):
        lightning = {
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in STATE.items()},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 0.1}]}],
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3}}}},
        }  # fmt: skip
        with open_checkpoint(str(write_torch(tmp_path / "last.ckpt", lightning))) as ckpt:
            assert ckpt.key == "state_dict"
            _assert_holds(ckpt, STATE, prefix="model.")
        with open_checkpoint(str(tmp_path / "last.ckpt"), key="state_dict.model") as ckpt:
            _assert_holds(ckpt, STATE)

    def test_model_and_optimizer(self, tmp_path):
        model = Small()
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randint(0, 10, (2, 3))).sum().backward()
        optimizer.step()
        path = write_torch(tmp_path / "train.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        with open_checkpoint(str(path)) as ckpt:
            assert ckpt.key == "model" and set(ckpt.entries()) == set(model.state_dict())
        dcp = write_dcp(tmp_path / "train-dcp", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        with open_checkpoint(str(dcp)) as ckpt:
            assert ckpt.key == "model" and set(ckpt.entries()) == set(model.state_dict())

    def test_ambiguous_copies_are_listed_and_chosen_with_key(self, tmp_path):
        path = write_torch(tmp_path / "ema.pt", {"model": STATE, "ema": small_state(1), "step": torch.tensor(5)})
        with pytest.raises(CheckpointError, match=r"several state dicts; choose one with --key: model \(11 tensors\), ema"):
            open_checkpoint(str(path))
        with open_checkpoint(str(path), key="ema") as ckpt:
            assert ckpt.key == "ema" and torch.equal(ckpt.read("body.0.weight"), small_state(1)["body.0.weight"])
            assert ckpt.candidates == (("model", 11), ("ema", 11))
        with pytest.raises(CheckpointError, match="--key 'emma'.*it holds: model .*, ema"):
            open_checkpoint(str(path), key="emma")

    def test_timm_style_state_dict_wins_over_its_ema(self, tmp_path):
        path = write_torch(tmp_path / "timm.pth", {"state_dict": STATE, "state_dict_ema": STATE, "epoch": 9})
        with open_checkpoint(str(path)) as ckpt:
            assert ckpt.key == "state_dict" and ("state_dict_ema", 11) in ckpt.candidates

    def test_key_on_a_flat_file_selects_a_name_prefix(self, files):
        with open_checkpoint(str(files["safetensors"]), key="body") as ckpt:
            assert set(ckpt.entries()) == {k[len("body."):] for k in STATE if k.startswith("body.")}
        with pytest.raises(CheckpointError, match="names start with: .*embed"):
            open_checkpoint(str(files["safetensors"]), key="decoder")

    def test_pickled_metadata_versions_are_kept(self, files, tmp_path):
        with open_checkpoint(str(files["torch"])) as ckpt:
            assert ckpt.metadata()["body.1"]["version"] == 2
        nested = write_torch(tmp_path / "nested.pt", {"state_dict": STATE})
        with open_checkpoint(str(nested)) as ckpt:
            assert ckpt.metadata()["body.1"]["version"] == 2
        with open_checkpoint(str(files["safetensors"])) as ckpt:
            assert ckpt.metadata() is None


def test_whole_pickled_model_is_a_source_only_with_trust(tmp_path):
    path = write_torch(tmp_path / "whole.pt", nn.Sequential(nn.Linear(2, 3)))
    with pytest.raises(UnsafeLoadError, match="--trust"):
        open_checkpoint(str(path))
    with open_checkpoint(str(path), trust=True) as ckpt:
        assert set(ckpt.entries()) == {"0.weight", "0.bias"}


def test_untied_copies_compare_equal(files):
    with open_checkpoint(str(files["torch"])) as a, open_checkpoint(str(files["safetensors"])) as b:
        for name in STATE:
            assert torch.equal(a.read(name), b.read(name))
    assert untied(STATE).keys() == STATE.keys()


def test_a_model_with_uninitialized_lazy_parameters_is_not_a_source():
    with pytest.raises(CheckpointError, match="uninitialized lazy parameters"):
        open_checkpoint(nn.Sequential(nn.LazyLinear(3)))
