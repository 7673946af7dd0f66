"""``modscope diff``: keys, renames, shape/dtype/value changes with exact statistics, tolerances, chunking,
--keys-only reading no data, the JSON schema, exit codes, and memory bounded by chunks, not tensors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import modscope
from modscope.checkpoint import mapped as mapped_module
from modscope.checkpoint import open_checkpoint
from modscope.cli import app
from modscope.collect.statedict import values
from modscope.errors import CheckpointError
from tests.checkpoint_files import checksums, small_state, write_dcp, write_safetensors, write_sharded, write_torch
from tests.conftest import REPO

STATE = small_state()


def _diff(a, b, **kwargs):
    return modscope.diff(str(a), str(b), **kwargs)


def test_same_state_in_every_format_is_identical(tmp_path):
    paths = [
        write_torch(tmp_path / "a.pt", STATE),
        write_safetensors(tmp_path / "b.safetensors", STATE),
        write_dcp(tmp_path / "dcp", {"model": STATE}),
        write_torch(tmp_path / "legacy.pt", STATE, legacy=True),
    ]
    for other in paths[1:]:
        report = _diff(paths[0], other)
        assert report.identical and report.unchanged == len(STATE)
        assert report.to_dict()["value_changed"] == []


def test_model_target_against_its_own_state(tmp_path):
    path = write_torch(tmp_path / "w.pt", STATE)
    torch.manual_seed(5)
    report = modscope.diff("tests/checkpoint_files.py:Small", str(path))  # a fresh init: same names, new values
    assert not report.identical and not report.only_in_a and not report.only_in_b
    assert {c.key for c in report.value_changed} == {"embed.weight", "head.weight", "body.0.weight", "body.0.bias",
                                                      "body.2.weight", "body.2.bias"}  # fmt: skip


@pytest.fixture
def changed(tmp_path):
    torch.manual_seed(1)
    a = {
        "kept": torch.randn(50),
        "moved": torch.randn(100),
        "reshaped": torch.randn(4, 6),
        "recast": torch.randn(8),
        "dropped": torch.randn(3),
        "steps": torch.arange(10),
    }
    b = {k: v.clone() for k, v in a.items() if k != "dropped"}
    b["moved"][:10] += 0.5
    b["reshaped"] = a["reshaped"].reshape(6, 4).clone()
    b["recast"] = a["recast"].half()
    b["added"] = torch.zeros(2)
    b["steps"][3] = 99
    return a, b, write_torch(tmp_path / "a.pt", a), write_safetensors(tmp_path / "b.safetensors", b)


def test_every_kind_of_change(changed):
    a, b, pa, pb = changed
    report = _diff(pa, pb)
    assert report.only_in_a == ("dropped",) and report.only_in_b == ("added",)
    assert [(c.key, c.a_shape, c.b_shape) for c in report.shape_changed] == [("reshaped", (4, 6), (6, 4))]
    assert [(c.key, c.a_dtype, c.b_dtype) for c in report.dtype_changed] == [("recast", "float32", "float16")]
    changes = {c.key: c for c in report.value_changed}
    assert set(changes) == {"moved", "recast", "steps"}
    moved = changes["moved"]
    diff = (a["moved"] - b["moved"]).double()
    assert moved.num_different == 10 and moved.numel == 100
    assert moved.max_abs_diff == pytest.approx(0.5, rel=1e-6)
    assert moved.mean_abs_diff == pytest.approx(float(diff.abs().mean()), rel=1e-6)
    assert moved.rel_l2 == pytest.approx(float(diff.norm() / a["moved"].double().norm()), rel=1e-5)
    assert changes["steps"].num_different == 1 and changes["steps"].max_abs_diff == 96
    assert changes["recast"].max_abs_diff == pytest.approx(float((a["recast"] - a["recast"].half().float()).abs().max()))
    assert report.unchanged == 1  # "kept"
    assert not report.identical


def test_chunked_statistics_equal_whole_tensor_statistics(changed, monkeypatch):
    _, _, pa, pb = changed
    whole = _diff(pa, pb)
    monkeypatch.setattr(values, "IO_BYTES", 64)  # a few elements per read, many reads per tensor
    monkeypatch.setattr(values, "BLOCK", 4)
    chunked = _diff(pa, pb)
    for x, y in zip(whole.value_changed, chunked.value_changed):
        assert x.key == y.key and x.num_different == y.num_different and x.max_abs_diff == y.max_abs_diff
        assert x.mean_abs_diff == pytest.approx(y.mean_abs_diff, rel=1e-6) and x.rel_l2 == pytest.approx(y.rel_l2, rel=1e-6)


def _mixed_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {
        "big": torch.randn(3000, 50),
        "ints": torch.arange(40000),
        "half": torch.randn(20000).half(),
        "odd": torch.randn(7777).double(),
        "tiny": torch.randn(3),
    }


@pytest.mark.parametrize("layout", ["torch", "safetensors", "sharded", "dcp"])
def test_mapped_reads_give_the_same_statistics_as_copied_reads(tmp_path, monkeypatch, layout):
    """Pieces big enough are viewed in read-only maps of the files; the statistics must not depend on it."""
    a, b = _mixed_state(0), _mixed_state(0)
    b["big"][::3] += 0.5
    b["ints"][7] = -1
    b["half"][100:200] = 0
    b["odd"] = b["odd"] * 2
    b["nan"], a["nan"] = torch.tensor([1.0, float("nan")]).repeat(5000), torch.tensor([1.0, float("nan")]).repeat(5000)
    b["nan"][0] = 2.0
    write = {
        "torch": lambda name, state: write_torch(tmp_path / f"{name}.pt", state),
        "safetensors": lambda name, state: write_safetensors(tmp_path / f"{name}.safetensors", state),
        "sharded": lambda name, state: write_sharded(tmp_path / name, state, shards=3),
        "dcp": lambda name, state: write_dcp(tmp_path / name, {"model": state}),
    }[layout]
    pa, pb = write("a", a), write("b", b)
    before = checksums(pa, pb)
    monkeypatch.setattr(values, "IO_BYTES", 64 << 10)  # many reads, pieces split across them
    monkeypatch.setattr(values, "BLOCK", 4 << 10)
    monkeypatch.setattr(values, "MAP_MIN_BYTES", 1 << 40)
    copied = _diff(pa, pb)
    mapped_views = []
    real_view = mapped_module.FileMaps.view
    monkeypatch.setattr(mapped_module.FileMaps, "view", lambda self, *args: mapped_views.append(args) or real_view(self, *args))
    monkeypatch.setattr(values, "MAP_MIN_BYTES", 1)
    mapped = _diff(pa, pb)
    assert len(mapped_views) > 10  # the mapped path really ran
    assert json.dumps(copied.to_dict()) == json.dumps(mapped.to_dict())  # (NaN != NaN in a dict compare)
    changes = {c.key: c for c in mapped.value_changed}
    assert set(changes) == {"big", "ints", "half", "odd", "nan"} and mapped.unchanged == 1
    assert changes["big"].num_different == 1000 * 50 and changes["ints"].num_different == 1
    assert changes["nan"].num_different == 1  # equal NaNs are not differences
    assert checksums(pa, pb) == before  # read-only maps: the files never change


@pytest.mark.parametrize("layout", ["torch", "safetensors", "sharded"])
def test_statistics_are_bit_identical_whatever_the_reads_and_threads(tmp_path, monkeypatch, layout):
    """Read sizes, mapped or copied reads and the number of comparison threads change how the work is cut
    up and who does it; the numbers must not change in their last bit."""
    torch.manual_seed(0)
    a = {"w": torch.randn(3 * values.BLOCK + 12345), "d": torch.randn(40000).double(), "h": torch.randn(70000).half()}
    b = {k: v + torch.randn_like(v) * 1e-3 for k, v in a.items()}
    write = {
        "torch": write_torch, "safetensors": write_safetensors, "sharded": lambda p, s: write_sharded(p, s, shards=2)
    }
    pa, pb = write[layout](tmp_path / "a", a), write[layout](tmp_path / "b", b)
    reports, real_threads = [], torch.get_num_threads()
    try:
        configs = [(32 << 20, 256 << 10, 1), (values.BLOCK * 4 + 4096, 1 << 40, 3), (64 << 10, 1, 8)]
        for io_bytes, map_min, threads in configs:
            monkeypatch.setattr(values, "IO_BYTES", io_bytes)  # 64 KiB: less than a block, one block per read
            monkeypatch.setattr(values, "MAP_MIN_BYTES", map_min)  # 1 << 40: every read is copied
            monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # comparison threads
            reports.append(json.dumps(_diff(pa, pb).to_dict()))
            monkeypatch.undo()
    finally:
        torch.set_num_threads(real_threads)  # the diff restores the count it was told it had
    assert reports[0] == reports[1] == reports[2]
    changed = json.loads(reports[0])["value_changed"]
    assert len(changed) == 3 and all(c["num_different"] > 0 for c in changed)


def _big_pair(tmp_path, writer):
    a = {f"w{i}": torch.randn(256, 256) for i in range(6)}
    b = {k: v + (i % 2) for i, (k, v) in enumerate(a.items())}
    return writer(tmp_path / "a.bin", a), writer(tmp_path / "b.bin", b)


@pytest.mark.parametrize("writer", [write_safetensors, write_torch])
def test_a_file_truncated_during_the_diff_is_a_clean_error(tmp_path, monkeypatch, writer):
    """A trainer re-saving a checkpoint truncates it: mapped pages past the new end must never be read."""
    pa, pb = _big_pair(tmp_path, writer)
    monkeypatch.setattr(values, "IO_BYTES", 256 << 10)  # one tensor per read
    truncated = []

    def progress(done, total):
        if not truncated:
            truncated.append(done)
            os.truncate(pb, 300_000)  # after the first read: the next one is already mapped and faulted in

    with pytest.raises(CheckpointError, match="changed while being read|ends early"):
        modscope.diff(str(pa), str(pb), progress=progress)
    assert truncated


def test_a_failing_comparison_thread_leaves_no_map_under_the_others(tmp_path, monkeypatch):
    """One comparison thread failing must not unmap windows another thread is still reading."""
    import threading
    import time

    pa, pb = _big_pair(tmp_path, write_safetensors)
    monkeypatch.setattr(values, "MAX_WORKERS", 2)
    monkeypatch.setattr(values, "BLOCK", 16 << 10)
    real, calls, lock = values._Folder.fold, [], threading.Lock()

    def fold(self, windows):
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            raise RuntimeError("this worker failed")
        time.sleep(0.2)  # still reading its windows while the error unwinds
        return real(self, windows)

    monkeypatch.setattr(values._Folder, "fold", fold)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with pytest.raises(RuntimeError, match="this worker failed"):
        modscope.diff(str(pa), str(pb))
    assert len(calls) >= 2


def test_tolerances_follow_isclose(tmp_path):
    a = {"w": torch.linspace(-1, 1, 1001)}  # includes 0, where any relative tolerance fails
    b = {"w": a["w"] + 1e-7}
    pa, pb = write_torch(tmp_path / "a.pt", a), write_torch(tmp_path / "b.pt", b)
    assert _diff(pa, pb).value_changed[0].num_different > 0
    assert _diff(pa, pb, atol=1e-6).identical
    relative = _diff(pa, pb, rtol=1e-4)  # fails only where |b| < 1e-3
    expected = int((~torch.isclose(a["w"], b["w"], rtol=1e-4, atol=0)).sum())
    assert relative.value_changed[0].num_different == expected > 0


def test_nan_and_inf(tmp_path):
    a = {"w": torch.tensor([1.0, float("nan"), float("inf"), 4.0]), "v": torch.tensor([float("nan"), 2.0])}
    b = {"w": torch.tensor([1.0, float("nan"), float("inf"), 5.0]), "v": torch.tensor([0.0, 2.0])}
    report = _diff(write_torch(tmp_path / "a.pt", a), write_torch(tmp_path / "b.pt", b))
    changes = {c.key: c for c in report.value_changed}
    assert changes["w"].num_different == 1 and changes["w"].max_abs_diff == 1.0  # equal NaN/inf are not changes
    assert changes["v"].num_different == 1 and math.isnan(changes["v"].max_abs_diff)
    document = json.loads(modscope_render_json(report))
    assert {c["key"]: c["max_abs_diff"] for c in document["value_changed"]}["v"] == "nan"


def modscope_render_json(report) -> str:
    from modscope.render.json import dumps

    return dumps(report)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "_orig_mod.module."])
def test_prefix_moves_are_renames(tmp_path, prefix):
    pa = write_torch(tmp_path / "a.pt", STATE)
    moved = {prefix + k: v for k, v in STATE.items()}
    moved[prefix + "body.0.bias"] = STATE["body.0.bias"] + 1
    report = _diff(pa, write_safetensors(tmp_path / "b.safetensors", moved))
    assert not report.only_in_a and not report.only_in_b
    assert {(r.a, r.b) for r in report.renamed} == {(k, prefix + k) for k in STATE}
    assert [(m.a_prefix, m.b_prefix, m.count) for m in report.prefix_moves] == [("", prefix, len(STATE))]
    assert [c.key for c in report.value_changed] == ["body.0.bias"]  # keys are A's names
    reverse = _diff(tmp_path / "b.safetensors", pa)
    assert [(m.a_prefix, m.b_prefix) for m in reverse.prefix_moves] == [(prefix, "")]


def test_renames_matched_by_shape_and_content(tmp_path):
    a = {"enc.w": torch.randn(5, 5), "enc.b": torch.randn(5), "same_shape_new_values": torch.randn(5, 5)}
    b = {"encoder.weight": a["enc.w"].clone(), "encoder.bias": a["enc.b"].clone(), "other": torch.randn(5, 5)}
    report = _diff(write_torch(tmp_path / "a.pt", a), write_torch(tmp_path / "b.pt", b))
    assert {(r.a, r.b) for r in report.renamed} == {("enc.w", "encoder.weight"), ("enc.b", "encoder.bias")}
    assert report.only_in_a == ("same_shape_new_values",) and report.only_in_b == ("other",)
    assert report.unchanged == 2


def test_keys_only_reads_no_tensor_data(changed):
    _, _, pa, pb = changed
    with open_checkpoint(str(pa)) as a, open_checkpoint(str(pb)) as b:
        for ckpt in (a, b):
            ckpt.reader.read = ckpt.reader.read_into = _forbidden
        report = modscope.diff(a, b, keys_only=True)
    assert report.unchanged is None and report.value_changed == ()
    assert [c.key for c in report.shape_changed] == ["reshaped"] and report.only_in_a == ("dropped",)
    assert report.to_dict()["unchanged"] is None


def _forbidden(*args, **kwargs):
    raise AssertionError("--keys-only read tensor data")


def test_progress_reaches_the_total(changed):
    _, _, pa, pb = changed
    calls = []
    _diff(pa, pb, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(x[0] <= y[0] for x, y in zip(calls, calls[1:]))


def test_cli_exit_codes_and_json_schema(changed):
    _, _, pa, pb = changed
    runner = CliRunner()
    same = runner.invoke(app, ["diff", str(pa), str(pa)])
    assert same.exit_code == 0 and "identical" in same.stdout
    different = runner.invoke(app, ["diff", str(pa), str(pb), "--json"])
    assert different.exit_code == 1 and different.stderr == ""
    document = json.loads(different.stdout)
    assert list(document) == ["schema", "identical", "only_in_a", "only_in_b", "renamed", "shape_changed",
                              "dtype_changed", "value_changed", "unchanged"]  # fmt: skip
    assert document["schema"] == "modscope.diff/1" and document["identical"] is False
    assert document["shape_changed"] == [{"key": "reshaped", "a_shape": [4, 6], "b_shape": [6, 4]}]
    assert document["dtype_changed"] == [{"key": "recast", "a_dtype": "float32", "b_dtype": "float16"}]
    assert set(document["value_changed"][0]) == {"key", "max_abs_diff", "mean_abs_diff", "rel_l2", "num_different"}
    text = runner.invoke(app, ["diff", str(pa), str(pb)])
    assert "Only in A (1):" in text.stdout and "different:" in text.stdout and "1 unchanged" in text.stdout
    missing = runner.invoke(app, ["diff", str(pa), str(pa) + ".nope"])
    assert missing.exit_code == 2


# Peak resident memory of this process's own address space (VmHWM). Not ru_maxrss: that also counts the
# pages a forked child shares with its parent before exec, i.e. the whole pytest process.
_PEAK = "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))"


def _peak_kib(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("writer", [write_safetensors, write_torch])
def test_memory_is_bounded_by_chunks_not_tensors(tmp_path, writer):
    n = 24 * 1024 * 1024  # one 96 MiB tensor per file
    a = torch.randn(n)
    pa = writer(tmp_path / "a.bin", {"big": a})
    a[::7] += 1
    pb = writer(tmp_path / "b.bin", {"big": a})
    del a
    baseline = _peak_kib(f"import torch, modscope.api.compare; {_PEAK}")
    used = _peak_kib(  # reads of 4 MiB per side: two in flight are 16 MiB, the two tensors 192 MiB
        "import modscope, modscope.collect.statedict.values as v; v.IO_BYTES = 4 << 20; "
        f"d = modscope.diff({str(pa)!r}, {str(pb)!r}); assert not d.identical; {_PEAK}"
    )
    loaded = _peak_kib(  # the measurement itself must see whole tensors when they are read whole
        f"import torch; from modscope.checkpoint import open_checkpoint; c = open_checkpoint({str(pa)!r}); "
        f"t = c.read('big').clone(); {_PEAK}"
    )
    extra_mib = (used - baseline) / 1024
    assert (loaded - baseline) / 1024 > 90
    assert extra_mib < 48, f"diff of two 96 MiB tensors took {extra_mib:.0f} MiB above import"
