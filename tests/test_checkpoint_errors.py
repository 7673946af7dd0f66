"""Broken, hostile and read-only inputs: one clear error line and exit 2; nothing in a file ever runs; no input
file is ever written."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from modscope.checkpoint import open_checkpoint
from modscope.checkpoint.torchfile import load_pickled
from modscope.cli import app
from modscope.errors import CheckpointError, ModscopeError, UnsafeLoadError
from tests.checkpoint_files import checksums, small_state, write_dcp, write_safetensors, write_sharded, write_torch

STATE = small_state()


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _assert_one_line_error(result, pattern: str = ""):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert result.stdout == ""


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _corrupt(path: Path, at: float = 0.5, length: int = 64) -> Path:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + length] = b"\xff" * min(length, len(data) - start)
    path.write_bytes(bytes(data))
    return path


# --- one case per way a file can be broken ---------------------------------------------------------------


def _torch_truncated(d):
    return _truncate(write_torch(d / "t.pt", STATE))


def _torch_tail_corrupt(d):  # the zip's central directory lives at the end
    return _corrupt(write_torch(d / "t.pt", STATE), at=0.97, length=200)


def _legacy_truncated(d):
    return _truncate(write_torch(d / "legacy.pt", STATE, legacy=True), 0.3)


def _safetensors_truncated(d):
    return _truncate(write_safetensors(d / "m.safetensors", STATE), 0.8)


def _safetensors_bad_header(d):
    path = write_safetensors(d / "m.safetensors", STATE)
    data = bytearray(path.read_bytes())
    data[10:20] = b"\x00" * 10  # inside the JSON header
    path.write_bytes(bytes(data))
    return path


def _safetensors_huge_header(d):
    path = write_safetensors(d / "m.safetensors", STATE)
    data = bytearray(path.read_bytes())
    data[:8] = (len(data) * 4).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return path


def _index_missing_shard(d):
    index = write_sharded(d / "sharded", STATE)
    next(index.parent.glob("*00002*")).unlink()
    return index


def _index_truncated_shard(d):
    index = write_sharded(d / "sharded", STATE)
    _truncate(next(index.parent.glob("*00001*")), 0.7)
    return index


def _index_not_an_index(d):
    path = d / "model.safetensors.index.json"
    path.write_text('{"metadata": {}}')
    return path


def _index_escapes_folder(d):
    path = d / "model.safetensors.index.json"
    path.write_text('{"weight_map": {"w": "../../etc/passwd"}}')
    return path


def _index_bad_json(d):
    path = d / "x.index.json"
    path.write_text('{"weight_map": {')
    return path


def _dcp_missing_data(d):
    folder = write_dcp(d / "dcp", {"model": STATE})
    for f in folder.glob("*.distcp"):
        f.unlink()
    return folder


def _dcp_truncated_data(d):
    folder = write_dcp(d / "dcp", {"model": STATE})
    _truncate(next(folder.glob("*.distcp")), 0.5)
    return folder


def _dcp_garbled_metadata(d):
    folder = write_dcp(d / "dcp", {"model": STATE})
    _truncate(folder / ".metadata", 0.5)
    return folder


def _empty_file(d):
    path = d / "empty.pt"
    path.write_bytes(b"")
    return path


def _text_file(d):
    path = d / "notes.ckpt"
    path.write_text("these are not weights\n")
    return path


def _png(d):
    path = d / "weights.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    return path


def _missing(d):
    return d / "nowhere.safetensors"


def _empty_folder(d):
    (d / "run").mkdir()
    return d / "run"


BROKEN = {
    "torch truncated": (_torch_truncated, "truncated or corrupt"),
    "torch corrupt tail": (_torch_tail_corrupt, "truncated or corrupt"),
    "legacy truncated": (_legacy_truncated, ""),
    "safetensors truncated": (_safetensors_truncated, "truncated"),
    "safetensors garbled header": (_safetensors_bad_header, "corrupt safetensors header"),
    "safetensors header longer than file": (_safetensors_huge_header, "truncated"),
    "index missing shard": (_index_missing_shard, "which is missing"),
    "index truncated shard": (_index_truncated_shard, "truncated"),
    "index without weight_map": (_index_not_an_index, "weight_map"),
    "index escaping its folder": (_index_escapes_folder, "outside its folder"),
    "index invalid json": (_index_bad_json, "not a valid index"),
    "dcp missing data": (_dcp_missing_data, "is missing"),
    "dcp truncated data": (_dcp_truncated_data, "truncated"),
    "dcp garbled metadata": (_dcp_garbled_metadata, "truncated or corrupt"),
    "empty file": (_empty_file, "is empty"),
    "text file": (_text_file, "not a checkpoint"),
    "png": (_png, "not a checkpoint"),
    "missing path": (_missing, "no such file"),
    "empty folder": (_empty_folder, "without a checkpoint"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_inputs_are_one_clear_error(tmp_path, case):
    make, pattern = BROKEN[case]
    path = str(make(tmp_path))
    with pytest.raises(CheckpointError) as info:
        with open_checkpoint(path):
            pass
    message = str(info.value)
    assert "\n" not in message and pattern in message, message
    _assert_one_line_error(_cli("summary", path), pattern)
    _assert_one_line_error(_cli("diff", path, path), pattern)
    _assert_one_line_error(_cli("check", "tests/checkpoint_files.py:Small", "--weights", path), pattern)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", STATE)
    path.chmod(0)
    try:
        _assert_one_line_error(_cli("summary", str(path)), "cannot read")
    finally:
        path.chmod(0o644)


# --- hostile pickles ------------------------------------------------------------------------------------


class Evil:
    """Unpickling this creates a file: proof that code from the checkpoint ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(marker: Path) -> Evil:
    evil = Evil()
    evil.marker = str(marker)
    return evil


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "PWNED"
    files = {
        "zip": write_torch(tmp_path / "evil.pt", {"state_dict": STATE, "hook": _evil(marker)}),
        "legacy": write_torch(tmp_path / "evil-legacy.pt", {"w": torch.ones(2), "x": _evil(marker)}, legacy=True),
        "dcp": write_dcp(tmp_path / "dcp", {"model": STATE}),
        "shard": write_sharded(tmp_path / "sharded", STATE, kind="bin"),
    }
    (files["dcp"] / ".metadata").write_bytes(pickle.dumps(_evil(marker)))
    torch.save({"x": _evil(marker), **STATE}, next(files["shard"].parent.glob("*00001*.bin")))
    return marker, files


@pytest.mark.parametrize("kind", ["zip", "legacy", "dcp", "shard"])
def test_hostile_pickles_are_refused_and_nothing_runs(hostile, kind):
    marker, files = hostile
    path = str(files[kind])
    with pytest.raises(UnsafeLoadError, match="Pass --trust only if you trust its source"):
        open_checkpoint(path)
    for args in (("summary", path), ("tree", path), ("diff", path, path), ("diff", path, path, "--keys-only"),
                 ("check", "tests/checkpoint_files.py:Small", "--weights", path),
                 ("summary", "tests/checkpoint_files.py:Small", "--weights", path)):  # fmt: skip
        _assert_one_line_error(_cli(*args), "--trust")
    assert not marker.exists()


def test_hostile_pickle_refused_with_and_without_mmap(hostile):
    marker, files = hostile
    for kwargs in ({"map_location": "meta"}, {"map_location": "cpu", "mmap": True}, {"map_location": "cpu"}):
        with pytest.raises(UnsafeLoadError):
            load_pickled(str(files["zip"]), trust=False, **kwargs)
    assert not marker.exists()


def test_trust_is_the_only_way_to_run_a_pickle(hostile):
    marker, files = hostile
    with open_checkpoint(str(files["zip"]), trust=True) as ckpt:
        assert ckpt.key == "state_dict"
    assert marker.exists()  # --trust did run the file's code, as documented


# --- inputs are never written ---------------------------------------------------------------------------


@pytest.fixture
def every_format(tmp_path):
    return [
        write_torch(tmp_path / "model.pt", STATE),
        write_torch(tmp_path / "legacy.pt", STATE, legacy=True),
        write_safetensors(tmp_path / "model.safetensors", STATE),
        write_sharded(tmp_path / "sharded", STATE),
        write_dcp(tmp_path / "dcp", {"model": STATE}),
    ]


def test_inputs_are_never_written(every_format):
    roots = [p if p.is_dir() else p for p in every_format]
    roots = [p.parent if p.name.endswith(".index.json") else p for p in roots]
    before = checksums(*roots)
    for path in map(str, every_format):
        for args in (("summary", path), ("tree", path), ("summary", path, "--tensors", "--json"),
                     ("check", "tests/checkpoint_files.py:Small", "--weights", path),
                     ("summary", "tests/checkpoint_files.py:Small", "--weights", path)):  # fmt: skip
            assert _cli(*args).exit_code in (0, 1)
        for other in map(str, every_format):
            assert _cli("diff", path, other).exit_code == 0
        with open_checkpoint(path) as ckpt:
            for name in ckpt.entries():
                tensor = ckpt.read(name)
                if tensor.is_floating_point():
                    tensor.add_(1)  # a private mapping: the write never reaches the file
    assert checksums(*roots) == before


def test_errors_are_modscope_errors_not_tracebacks(tmp_path):
    path = _torch_truncated(tmp_path)
    shutil.copy(path, tmp_path / "again.pt")
    with pytest.raises(ModscopeError):
        open_checkpoint(str(tmp_path / "again.pt"))
