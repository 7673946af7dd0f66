"""Distributed models, for real: 2-rank gloo jobs on CPU (FSDP2 fully_shard, distribute_tensor, dcp.save).

One torchrun job (``distributed_worker.py``) runs every API scenario and writes what each rank saw; the
CLI is launched under torchrun as a user would. Every launch has a timeout and cleans up after itself
(``distributed_harness``). The tests without the ``distributed`` mark need no process group.
"""
from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch
from distributed_harness import REPO, job_env, run, torchrun
from torch import nn

FSDP_PARAMS = 31392  # examples/sharded.py:MLP() with its defaults
SCENARIOS = ("api", "findings", "rank_error", "mismatch", "dcp")

needs_dist = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Run every scenario once on 2 ranks; {scenario: [rank0 result, rank1 result]}."""
    out = tmp_path_factory.mktemp("dist")
    result = torchrun(str(REPO / "tests" / "distributed_worker.py"), str(out), *SCENARIOS, timeout=300)
    seen = {}
    for name in SCENARIOS:
        ranks = []
        for rank in (0, 1):
            path = out / f"{name}.rank{rank}.pkl"
            assert path.exists(), f"{name} left no result on rank {rank}\n{result.worker_lines()[-4000:]}"
            with open(path, "rb") as f:
                ranks.append(pickle.load(f))
            assert "error" not in ranks[-1], f"{name} failed on rank {rank}:\n{ranks[-1]['error']}"
        seen[name] = ranks
    assert result.returncode == 0, result.worker_lines()[-4000:]
    return seen


def _param(doc: dict, name: str) -> dict:
    return next(p for p in doc["parameters"] if p["name"] == name)


def _codes(doc: dict, key: str = "warnings") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in doc[key]:
        out.setdefault(f["code"], []).append(f)
    return out


# --- the model on each rank ------------------------------------------------------------------------------


@pytest.mark.distributed
@needs_dist
def test_every_rank_counts_global_elements_once(job):
    for rank, seen in enumerate(job["api"]):
        local = seen["local"]
        assert local["totals"]["params"] == seen["reference_params"] == FSDP_PARAMS  # not local, not local x world
        assert local["totals"]["param_bytes"] == FSDP_PARAMS * 4
        assert next(m for m in local["modules"] if m["name"] == "")["params_total"] == FSDP_PARAMS
        embed = _param(local, "embed.weight")
        assert embed["shape"] == [96, 32] and embed["numel"] == 96 * 32  # global
        sharding = embed["sharding"]
        assert sharding["placements"] == ["Shard(0)"] and sharding["mesh"] == "mesh0"
        assert sharding["local_shape"] == [48, 32] and sharding["global_offset"] == [48 * rank, 0]
        assert local["distributed"]["rank"] == rank and local["distributed"]["world_size"] == 2
        assert local["distributed"]["gathered"] is False
        assert local["warnings"] == []


@pytest.mark.distributed
@needs_dist
def test_local_shards_add_up_to_the_global_size(job):
    ranks = [seen["local"]["distributed"]["this_rank"] for seen in job["api"]]
    assert sum(r["param_bytes"] for r in ranks) == FSDP_PARAMS * 4
    assert sum(r["param_numel"] for r in ranks) == FSDP_PARAMS
    # uneven shards follow torch.chunk: blocks.0.norm.weight has 32 rows -> 16/16; up.bias 128 -> 64/64
    local = job["api"][0]["local"]
    up = _param(local, "blocks.0.up.weight")["sharding"]
    assert up["local_numel_min"] == up["local_numel_max"] == 64 * 32


@pytest.mark.distributed
@needs_dist
def test_summary_on_one_rank_alone_does_not_wait_for_the_others(job):
    assert job["api"][0]["rank0_alone"] is True


@pytest.mark.distributed
@needs_dist
def test_reports_leave_the_sharded_model_untouched(job):
    assert all(seen["unchanged"] for seen in job["api"])


# --- gathered reports ------------------------------------------------------------------------------------


@pytest.mark.distributed
@needs_dist
def test_gathered_summary_on_rank_0_only(job):
    gathered, nothing = job["api"][0]["gathered"], job["api"][1]["gathered"]
    assert nothing is None
    assert gathered["model"]["target"] == "fsdp_mlp"
    assert gathered["totals"]["params"] == FSDP_PARAMS
    dist_ = gathered["distributed"]
    assert dist_["gathered"] is True and [r["rank"] for r in dist_["ranks"]] == [0, 1]
    assert dist_["param_bytes_all_ranks"] == FSDP_PARAMS * 4  # pure FSDP: nothing is held twice
    assert dist_["params"] == {"sharded": 20, "replicated": 0, "partial": 0, "plain": 0, "plain_numel": 0}
    assert len(dist_["fsdp_modules"]) == 4  # 3 blocks + the root
    assert dist_["meshes"] == [
        {"id": "mesh0", "device_type": "cpu", "shape": [2], "dim_names": None, "size": 2, "ranks": [0, 1],
         "params": 20, "param_numel": FSDP_PARAMS}
    ]  # fmt: skip
    assert gathered["warnings"] == []


@pytest.mark.distributed
@needs_dist
def test_gathered_audit_and_other_destinations(job):
    audit = job["api"][0]["audit"]
    assert audit["ok"] is True and audit["findings"] == [] and audit["distributed"]["gathered"] is True
    assert job["api"][1]["audit"] is None
    assert job["api"][0]["dst1"] is None  # dst=1 within a new group: rank 1 gets it
    assert job["api"][1]["dst1"]["totals"]["params"] == FSDP_PARAMS


@pytest.mark.distributed
@needs_dist
def test_gathered_view_shows_placements_and_ranks(job):
    text = job["api"][0]["text"]
    assert "gathered from 2 rank(s); rank 0 of 2 (gloo)" in text
    assert "20 sharded, 0 replicated, 0 partial, 0 plain (not DTensors)" in text
    assert "mesh0 Shard(0)" in text and "48x32" in text  # placement and local shape of embed.weight
    assert "Per rank" in text


@pytest.mark.distributed
@needs_dist
def test_findings_merged_over_ranks(job):
    report = job["findings"][0]["gathered"]
    assert job["findings"][1]["gathered"] is None
    codes = _codes(report)
    assert [f["name"] for f in codes["unsharded_parameter"]] == ["embed.weight"]
    assert "no fully_shard unit reduces their gradients" in codes["unsharded_parameter"][0]["message"]
    assert codes["replicated_parameter"][0]["name"] == "head.weight"
    assert codes["partial_parameter"][0]["name"] == "extra.bias"
    assert "2 different device meshes" in codes["mixed_mesh"][0]["message"]
    nan = codes["nonfinite_weights"][0]
    assert nan["name"] == "blocks.0.up.weight" and nan["severity"] == "error"
    assert "1 NaN" in nan["message"] and "rank(s) 1" in nan["message"]
    mismatch = {f["severity"]: f for f in codes["replica_mismatch"]}
    assert mismatch["error"]["name"] == "head.weight"  # declared Replicate(), values differ
    assert "rank(s) 0 vs rank(s) 1" in mismatch["error"]["message"]
    assert mismatch["warning"]["name"] == "embed.weight"  # plain, seeded differently per rank
    meshes = report["distributed"]["meshes"]
    assert [(m["shape"], m["dim_names"]) for m in meshes] == [([2], None), ([1, 2], ["dp", "tp"])]
    extra = _param(report, "extra.weight")["sharding"]
    assert extra["mesh"] == "mesh1" and extra["placements"] == ["Replicate()", "Shard(1)"]
    assert extra["local_shape"] == [6, 4] and extra["local_numel_min"] == extra["local_numel_max"] == 24
    # head.weight is held whole by both ranks: more bytes across ranks than the model has
    dist_ = report["distributed"]
    assert dist_["param_bytes_all_ranks"] > report["totals"]["param_bytes"]


@pytest.mark.distributed
@needs_dist
def test_a_failing_rank_is_named_and_nobody_hangs(job):
    rank0, rank1 = job["rank_error"]
    assert "1 of 2 rank(s) failed: rank(s) 1: expected a torch.nn.Module, got str" in rank0["error_text"]
    assert rank0["exit_code"] == 2
    assert "expected a torch.nn.Module" in rank1["error_text"]  # its own error, raised after the gather


@pytest.mark.distributed
@needs_dist
def test_ranks_holding_different_models(job):
    report = job["mismatch"][0]["gathered"]
    mismatch = _codes(report)["rank_mismatch"][0]
    assert mismatch["severity"] == "error" and "rank(s) 1 hold a different model than rank 0" in mismatch["message"]


# --- the CLI under torchrun ------------------------------------------------------------------------------


@pytest.mark.distributed
@needs_dist
def test_cli_summary_json_under_torchrun_prints_once():
    result = torchrun("-m", "modscope", "summary", "examples/sharded.py:fsdp_mlp", "--json")
    assert result.returncode == 0, result.worker_lines()[-3000:]
    doc = json.loads(result.stdout)  # one document: rank 1 printed nothing
    _matches_its_schema(doc)
    assert doc["totals"]["params"] == FSDP_PARAMS
    assert doc["distributed"]["gathered"] is True and len(doc["distributed"]["ranks"]) == 2
    assert _param(doc, "head.weight")["sharding"]["local_shape"] == [48, 32]


@pytest.mark.distributed
@needs_dist
def test_cli_audit_under_torchrun_text():
    result = torchrun("-m", "modscope", "audit", "examples/sharded.py:forgot_the_root")
    assert result.returncode == 0, result.worker_lines()[-3000:]
    assert result.stdout.count("Audit MLP") == 1
    assert result.stdout.count("unsharded_parameter") == 1
    assert "ranks    2" in result.stdout


@pytest.mark.distributed
@needs_dist
def test_cli_errors_under_torchrun_reported_once_by_rank_0():
    result = torchrun("-m", "modscope", "summary", "examples/sharded.py:missing_factory", timeout=180)
    assert result.returncode != 0 and result.stdout == ""
    errors = [line for line in result.worker_lines().splitlines() if line.startswith("modscope: error:")]
    assert len(errors) == 1, result.worker_lines()
    assert "2 of 2 rank(s) failed: rank(s) 0-1: 'missing_factory' not found" in errors[0]
    assert "exitcode  : 2" in result.stderr  # torchrun's own summary: every rank exited 2


@pytest.mark.distributed
@needs_dist
def test_cli_one_process_world_without_a_launcher():
    result = run(
        [sys.executable, "-m", "modscope", "summary", "examples/sharded.py:tensor_parallel_mlp", "--distributed", "--json"],
        timeout=120,
        env=job_env(),
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    _matches_its_schema(doc)
    assert doc["distributed"]["world_size"] == 1
    assert _param(doc, "up.weight")["sharding"]["placements"] == ["Shard(0)"]
    assert _param(doc, "down.weight")["sharding"]["placements"] == ["Shard(1)"]


def _matches_its_schema(doc: dict) -> None:
    """The sharded parts (``sharding``, ``distributed``) hold to modscope/schemas/summary.json too."""
    import jsonschema

    from modscope import schemas

    jsonschema.Draft202012Validator(schemas.load("summary"), registry=schemas.registry()).validate(doc)


def test_cli_hint_when_a_factory_needs_a_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    result = _modscope("summary", f"{REPO / 'examples' / 'sharded.py'}:fsdp_mlp")
    assert result.returncode == 2
    assert "launch it with torchrun, or pass --distributed" in result.output


# --- DCP folders written by dcp.save ---------------------------------------------------------------------


def _modscope(*args: str):
    """The real CLI, in-process (no interpreter start-up per call): exit_code and stdout like a subprocess."""
    from typer.testing import CliRunner

    from modscope.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "120", "NO_COLOR": "1"})
    result.returncode = result.exit_code
    return result


@pytest.fixture(scope="module")
def ckpt(job):
    from pathlib import Path

    return Path(job["dcp"][0]["folder"])


@pytest.mark.distributed
@needs_dist
def test_dcp_summary_from_metadata(ckpt):
    result = _modscope("summary", str(ckpt / "fsdp"), "--json")
    assert result.returncode == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["checkpoint"]["format"] == "dcp" and doc["checkpoint"]["key"] == "model"
    assert doc["totals"]["numel"] == FSDP_PARAMS and doc["totals"]["tensors"] == 20
    layout = doc["layout"]
    assert [f["name"] for f in layout["files"]] == ["__0_0.distcp", "__1_0.distcp"]
    embed = next(t for t in layout["tensors"] if t["name"] == "embed.weight")
    assert embed["split"] == [2, 1] and embed["covered"] is True
    assert [(c["offsets"], c["sizes"], c["file"]) for c in embed["chunks"]] == [
        ([0, 0], [48, 32], "__0_0.distcp"),
        ([48, 0], [48, 32], "__1_0.distcp"),
    ]
    assert layout["uncovered"] == []
    text = _modscope("summary", str(ckpt / "fsdp")).stdout
    assert "DCP data files" in text and "20 tensor(s) 2 chunks along dim 0" in text


@pytest.mark.distributed
@needs_dist
def test_dcp_tree_and_tensor_list_show_chunking(ckpt):
    tree = _modscope("tree", str(ckpt / "tp"))
    assert tree.returncode == 0, tree.output
    assert "32x128 float32  [2 chunks along dim 1 in 2 files]" in tree.stdout  # down.weight: RowwiseParallel
    assert "128x32 float32  [2 chunks along dim 0 in 2 files]" in tree.stdout  # up.weight: ColwiseParallel
    doc = json.loads(_modscope("tree", str(ckpt / "tp"), "--json").stdout)
    assert doc["schema"] == "modscope.checkpoint_tree/1" and "layout" in doc
    listing = _modscope("summary", str(ckpt / "tp"), "--tensors").stdout
    assert "chunks" in listing and "dim 1" in listing


@pytest.mark.distributed
@needs_dist
def test_dcp_diffs(ckpt):
    keys = _modscope("diff", str(ckpt / "fsdp"), str(ckpt / "fsdp_changed"), "--keys-only")
    assert keys.returncode == 0, keys.output
    values = _modscope("diff", str(ckpt / "fsdp"), str(ckpt / "fsdp_changed"), "--json")
    assert values.returncode == 1
    doc = json.loads(values.stdout)
    assert [c["key"] for c in doc["value_changed"]] == ["blocks.1.up.weight"]
    same = _modscope("diff", str(ckpt / "fsdp"), str(ckpt / "fsdp_full.pt"))
    assert same.returncode == 0 and "identical" in same.stdout, same.output
    tp = _modscope("diff", str(ckpt / "tp"), str(ckpt / "tp_full.pt"))
    assert tp.returncode == 0 and "identical" in tp.stdout, tp.output


@pytest.mark.distributed
@needs_dist
def test_dcp_value_diff_never_assembles_a_whole_tensor(ckpt, monkeypatch):
    """Column-split chunks are read row block by row block: never the whole tensor, never a memory map."""
    import modscope
    from modscope.checkpoint import open_checkpoint
    from modscope.checkpoint.dcp import DcpReader

    def refuse(self, *args, **kwargs):
        raise AssertionError("a whole-tensor read on the diff path")

    monkeypatch.setattr(DcpReader, "read", refuse)
    monkeypatch.setattr(DcpReader, "_assemble", refuse)
    with open_checkpoint(str(ckpt / "tp")) as left, open_checkpoint(str(ckpt / "tp_full.pt")) as right:
        report = modscope.diff(left, right)
    assert report.identical
    with open_checkpoint(str(ckpt / "tp")) as dcp_ckpt:
        full = torch.load(ckpt / "tp_full.pt", weights_only=True)["down.weight"].reshape(-1)
        for start, count in ((0, full.numel()), (3, 130), (127, 2), (4000, 96)):
            out = torch.empty(count)
            dcp_ckpt.read_into("down.weight", start, out)
            assert torch.equal(out, full[start : start + count]), (start, count)


# --- without processes -----------------------------------------------------------------------------------


def test_local_numel_range_follows_torch_chunk():
    from torch.distributed.tensor import Replicate, Shard

    from modscope.collect.distributed.dtensor import local_numel_range

    assert local_numel_range((7, 5), (2,), [Shard(0)]) == (15, 20)  # 4 and 3 rows
    assert local_numel_range((3,), (4,), [Shard(0)]) == (0, 1)  # 1, 1, 1, 0
    assert local_numel_range((8, 6), (2, 3), [Shard(0), Shard(1)]) == (8, 8)
    assert local_numel_range((8, 6), (2, 3), [Replicate(), Replicate()]) == (48, 48)
    assert local_numel_range((10,), (2, 2), [Shard(0), Shard(0)]) == (2, 3)  # 5 -> 3 + 2, 5 -> 3 + 2


def test_rank_ranges_and_failures_text():
    from modscope.collect.distributed.ranks import failures_text, rank_ranges

    assert rank_ranges([5, 0, 1, 2, 7, 8]) == "0-2, 5, 7-8"
    text = failures_text([(0, "boom"), (1, "boom"), (3, "other")], 4)
    assert text == "3 of 4 rank(s) failed: rank(s) 0-1: boom; rank(s) 3: other"


def test_merge_findings_labels_ranks():
    from modscope.api.distributed import merge_findings
    from modscope.reports import Finding

    same = Finding("a", "x", "everywhere")
    merged = merge_findings(
        [(0, [same, Finding("b", "y", "on rank 0")]), (1, [same, Finding("b", "y", "on rank 1")]), (2, [same])],
        [0, 1, 2],
    )
    assert [f.message for f in merged] == ["everywhere", "on rank 0 [on rank(s) 0-1; rank 0's message shown]"]


def test_bit_checksum_is_exact():
    from modscope.collect.distributed.ranks import bit_checksum

    a = torch.randn(1000)
    b = a.clone()
    assert bit_checksum(a) == bit_checksum(b)
    b[500] = torch.nextafter(b[500], torch.tensor(float("inf")))  # one ulp
    assert bit_checksum(a) != bit_checksum(b)
    odd = torch.randn(7, dtype=torch.bfloat16)[1:]  # odd byte offset: read as int16/bytes
    assert bit_checksum(odd) == bit_checksum(odd.clone())
    assert bit_checksum(torch.empty(0)) == (0, 0)


def test_distributed_summary_without_a_process_group():
    import modscope

    report = modscope.distributed_summary(nn.Linear(3, 2))
    assert report.totals.params == 8
    assert report.distributed.gathered and report.distributed.rank is None
    assert [r.rank for r in report.distributed.ranks] == [0] and report.distributed.meshes == ()
    assert "distributed" in report.to_dict()
    assert "distributed" not in modscope.summary(nn.Linear(3, 2)).to_dict()  # plain models: unchanged schema


def test_static_collectors_on_a_build_without_torch_distributed(monkeypatch):
    import modscope
    from modscope.collect.distributed import dtensor as d

    d._dtensor_types.cache_clear()
    d._fsdp_module_types.cache_clear()
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    try:
        report = modscope.summary(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
        assert report.totals.params == 12 and report.distributed is None
        assert d.process_group_state() == (None, None, None) and not d.is_dtensor(torch.ones(1))
        assert modscope.distributed_summary(nn.Linear(3, 2)).distributed.rank is None
    finally:
        d._dtensor_types.cache_clear()
        d._fsdp_module_types.cache_clear()
