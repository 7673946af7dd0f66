"""Hostile and broken stores: safetensors headers, sharded indexes, DCP folders, FIFOs, devices and symlinks.

Files are real (written by safetensors, torch.distributed.checkpoint), then tampered with. Every case must be
one clear error line (exit 2), never a hang, a traceback, a read outside the checkpoint or a wrong value.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modscope.checkpoint import open_checkpoint
from modscope.checkpoint.guard import json_depth, load_json
from modscope.collect.statedict.checkpoint import summarize_checkpoint
from modscope.errors import CheckpointError
from tests.checkpoint_files import small_state, untied, write_dcp, write_safetensors, write_sharded
from tests.conftest import run_modscope

STATE = untied(small_state())


def _refused(path, pattern: str) -> str:
    with pytest.raises(CheckpointError) as info:
        with open_checkpoint(str(path)) as ckpt:
            for name in ckpt.entries():
                ckpt.read(name)
    message = str(info.value)
    assert "\n" not in message and pattern in message, message
    return message


def _values(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(str(path)) as ckpt:
        return {name: ckpt.read(name).clone() for name in ckpt.entries()}


# --- safetensors ----------------------------------------------------------------------------------------


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write(path: Path, header, data: bytes, *, length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)
    return path


def _tampered(tmp_path: Path, change) -> Path:
    """A file written by the safetensors library, its header then changed by ``change(header)``."""
    path = write_safetensors(tmp_path / "m.safetensors", {"a": torch.ones(2, 3), "b": torch.arange(4.0)})
    header, data = _split(path)
    change(header)
    return _write(path, header, data)


def _entry(name: str, **fields):
    def change(header):
        header[name].update(fields)

    return change


SAFETENSORS_CASES = {
    "unknown dtype": (_entry("a", dtype="F4"), "which modscope cannot read"),
    "dtype not a string": (_entry("a", dtype=["F32"]), "which modscope cannot read"),
    "negative dimension": (_entry("a", shape=[-2, -3]), "not a list of non-negative integers"),
    "boolean dimension": (_entry("a", shape=[True, 6]), "not a list of non-negative integers"),
    "shape not a list": (_entry("a", shape="2x3"), "not a list of non-negative integers"),
    "too many dimensions": (_entry("a", shape=[1] * 100 + [6]), "dimensions"),
    "offsets not a pair": (_entry("a", data_offsets=[0]), "not [begin, end]"),
    "negative offset": (_entry("a", data_offsets=[-24, 0]), "not [begin, end]"),
    "begin after end": (_entry("b", data_offsets=[24, 8]), "begin after end"),
    "past the data": (_entry("b", data_offsets=[24, 4000]), "is truncated"),
    "byte count": (_entry("b", shape=[5]), "hold 16 bytes"),
    "overlap": (lambda h: (h["b"].update(data_offsets=[0, 16]), h["a"].update(data_offsets=[8, 32])), "overlaps"),
    "gap": (_entry("a", shape=[2, 2], data_offsets=[0, 16]), "leaves a gap of 8 bytes"),
    "entry not an object": (lambda h: h.update(a=[1, 2]), "not an object"),
    "metadata not strings": (lambda h: h.update(__metadata__={"format": 1}), "__metadata__"),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_tampered_safetensors_headers_are_refused(tmp_path, case):
    change, pattern = SAFETENSORS_CASES[case]
    _refused(_tampered(tmp_path, change), pattern)


def test_header_length_is_checked_against_the_cap_and_the_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", {"a": torch.ones(3)})
    header, data = _split(path)
    _refused(_write(tmp_path / "huge.safetensors", header, data, length=10**12), "allows at most 100000000")
    _refused(_write(tmp_path / "long.safetensors", header, data, length=len(path.read_bytes())), "is truncated")


def test_data_after_the_last_tensor_and_duplicate_names_are_refused(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", {"a": torch.ones(3)})
    header, data = _split(path)
    _refused(_write(tmp_path / "tail.safetensors", header, data + b"\0" * 8), "bytes of data follow the header")
    text = b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, '
    text += b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    _refused(_write(tmp_path / "twice.safetensors", text, data), "names 'a' twice")


def test_untampered_files_read_what_the_safetensors_library_reads(tmp_path):
    state = {**STATE, "empty": torch.zeros(0, 3), "scalar": torch.tensor(7, dtype=torch.int16), "other_empty": torch.zeros(0)}
    path = write_safetensors(tmp_path / "m.safetensors", state)
    expected = load_file(str(path))
    got = _values(path)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


def test_json_nesting_is_bounded_before_parsing(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    assert json_depth(deep) == 100_000
    assert json_depth(b'{"[[[[": "\\"[[", "a": [[1]]}') == 3  # brackets inside strings do not count
    with pytest.raises(CheckpointError, match="nests 100000 levels deep"):
        load_json(deep, "x")
    _refused(_write(tmp_path / "deep.safetensors", b'{"a": ' + deep + b"}", b""), "nests 100001 levels deep")


def test_a_name_of_60000_dotted_parts_is_refused_quickly(tmp_path):
    name = ".".join(["a"] * 60_000)
    path = _write(tmp_path / "long.safetensors", {name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    started = time.process_time()  # CPU seconds: on a loaded machine wall time also counts the neighbours
    with open_checkpoint(str(path)) as ckpt:
        with pytest.raises(CheckpointError, match="nest too deeply to show as a tree"):
            summarize_checkpoint(ckpt)
    assert time.process_time() - started < 30  # was 98 s and 5 GB: every prefix re-joined for every level


def test_a_2000_deep_chain_of_names_still_makes_a_tree(tmp_path):
    names = [".".join(["0"] * depth + ["weight"]) for depth in range(2000)]
    header = {n: {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i, n in enumerate(names)}
    path = _write(tmp_path / "chain.safetensors", header, bytes(2000))
    with open_checkpoint(str(path)) as ckpt:
        nodes = summarize_checkpoint(ckpt).nodes
    assert len(nodes) == 2000 and nodes[0].tensors_total == 2000 and nodes[-1].tensors == 1


# --- sharded indexes ------------------------------------------------------------------------------------


def _sharded(tmp_path: Path) -> Path:
    return write_sharded(tmp_path / "sh", STATE)


def _rewrite_index(index: Path, change) -> Path:
    document = json.loads(index.read_text())
    change(document["weight_map"])
    index.write_text(json.dumps(document))
    return index


def test_index_shards_must_stay_inside_the_folder(tmp_path):
    index = _sharded(tmp_path)
    shard = sorted(p for p in index.parent.iterdir() if p.suffix == ".safetensors")[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(shard, outside / shard.name)
    os.symlink(outside / shard.name, shard)  # a symlink leaving the folder is not followed
    _refused(index, "lies outside its folder")
    os.unlink(shard)
    shutil.move(outside / shard.name, shard)
    for escape in (f"../elsewhere/{shard.name}", str(outside / shard.name)):
        _rewrite_index(index, lambda m: m.update({k: escape for k, v in m.items() if v == shard.name}))
        _refused(index, "lies outside its folder")
        _rewrite_index(index, lambda m: m.update({k: shard.name for k, v in m.items() if v == escape}))
    inside = index.parent / "link.safetensors"
    os.symlink(shard.name, inside)  # a symlink within the folder is fine
    _rewrite_index(index, lambda m: m.update({k: inside.name for k, v in m.items() if v == shard.name}))
    assert _values(index).keys() == STATE.keys()


def test_a_hugging_face_cache_snapshot_reads(tmp_path):
    index = _sharded(tmp_path / "build")
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(index.parent.iterdir())):
        shutil.move(file, repo / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snapshot / file.name)
    values = _values(snapshot)
    assert all(torch.equal(values[k], v) for k, v in STATE.items())


INDEX_CASES = {
    "shard not a string": (lambda m: m.update({next(iter(m)): 3}), "no \"weight_map\""),
    "weight map a list": (b'{"weight_map": [1, 2]}', "no \"weight_map\""),
    "deep": (b'{"weight_map": {}, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nests 50001 levels deep"),
    "duplicate": (b'{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', "names 'a' twice"),
}


@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_malformed_indexes_are_refused(tmp_path, case):
    change, pattern = INDEX_CASES[case]
    index = _sharded(tmp_path)
    if isinstance(change, bytes):
        index.write_bytes(change)
    else:
        _rewrite_index(index, change)
    _refused(index, pattern)


# --- torch.distributed.checkpoint folders ---------------------------------------------------------------


def _dcp(tmp_path: Path, name: str = "dcp", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return write_dcp(tmp_path / name, {"embed.weight": torch.randn(4, 4), "step": 3})


def _metadata(folder: Path):
    with open(folder / ".metadata", "rb") as f:
        return pickle.load(f)


def _save_metadata(folder: Path, metadata) -> Path:
    with open(folder / ".metadata", "wb") as f:
        pickle.dump(metadata, f)
    return folder


def _set_storage(folder: Path, **fields) -> Path:
    metadata = _metadata(folder)
    for info in metadata.storage_data.values():
        if info.relative_path.endswith(".distcp"):
            for key, value in fields.items():
                setattr(info, key, value)
    return _save_metadata(folder, metadata)


def test_dcp_paths_outside_the_folder_are_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(4096))
    _refused(_set_storage(_dcp(tmp_path, "abs"), relative_path=str(secret)), "lies outside its folder")
    _refused(_set_storage(_dcp(tmp_path, "up"), relative_path="../secret.bin"), "lies outside its folder")
    linked = _dcp(tmp_path, "link")
    data = next(linked.glob("*.distcp"))
    shutil.move(data, tmp_path / "moved.distcp")
    os.symlink(tmp_path / "moved.distcp", data)
    _refused(linked, "lies outside its folder")


def test_a_diff_cannot_be_fooled_into_identical_by_borrowed_data(tmp_path):
    a, b = _dcp(tmp_path, "a", seed=0), _dcp(tmp_path, "b", seed=1)
    _set_storage(b, relative_path=str(next(a.glob("*.distcp")).resolve()))  # b's metadata names a's data
    result = run_modscope("diff", str(a), str(b), timeout=120)
    assert result.returncode == 2 and "outside its folder" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _set_chunks(folder: Path, change) -> Path:
    metadata = _metadata(folder)
    change(metadata.state_dict_metadata["embed.weight"])
    return _save_metadata(folder, metadata)


DCP_CASES = {
    "state dict metadata a list": (lambda md: setattr(md, "state_dict_metadata", [1]), "not a dict"),
    "storage data a list": (lambda md: setattr(md, "storage_data", [1]), "storage_data is not a dict"),
    "entry of a wrong type": (lambda md: md.state_dict_metadata.update(x=3), "not tensor or bytes metadata"),
    "size of strings": (lambda md: setattr(md.state_dict_metadata["embed.weight"], "size", ("4", "4")), "has size"),
    "no dtype": (lambda md: setattr(md.state_dict_metadata["embed.weight"].properties, "dtype", "f32"), "no valid dtype"),
    "chunks not a list": (lambda md: setattr(md.state_dict_metadata["embed.weight"], "chunks", 5), "not a list"),
    "chunk past the shape": (
        lambda md: setattr(md.state_dict_metadata["embed.weight"], "size", torch.Size([2, 4])),
        "reaches past its shape",
    ),
    "chunks short of the shape": (
        lambda md: setattr(md.state_dict_metadata["embed.weight"], "size", torch.Size([8, 4])),
        "do not add up",
    ),
    "planner path a number": (lambda md: md.planner_data.update({"embed.weight": 5}), "planner data"),
}


@pytest.mark.parametrize("case", list(DCP_CASES))
def test_dcp_metadata_of_the_wrong_types_is_refused(tmp_path, case):
    change, pattern = DCP_CASES[case]
    folder = _dcp(tmp_path)
    metadata = _metadata(folder)
    change(metadata)
    _refused(_save_metadata(folder, metadata), pattern)


def test_dcp_offsets_and_lengths_are_checked_against_the_files(tmp_path):
    folder = _dcp(tmp_path)
    size = next(folder.glob("*.distcp")).stat().st_size
    _refused(_set_storage(folder, offset=-1), "non-negative offset and length")
    _refused(_set_storage(_dcp(tmp_path, "long"), length=size + 1), "is truncated")
    _refused(_set_storage(_dcp(tmp_path, "far"), offset=10**15), "is truncated")
    _refused(_set_storage(_dcp(tmp_path, "short"), length=100), "corrupt")


def _rezip(folder: Path, compression: int) -> None:
    """Rewrite the (single) chunk archive with Python's zipfile, as a repackaging tool would."""
    data = next(folder.glob("*.distcp"))
    source = zipfile.ZipFile(io.BytesIO(data.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    data.write_bytes(out.getvalue())
    _set_storage(folder, offset=0, length=len(out.getvalue()))


def test_a_chunk_archive_rewritten_by_zipfile_reads_true_values_or_is_refused(tmp_path):
    expected = _values(_dcp(tmp_path, "original"))["embed.weight"]
    stored = _dcp(tmp_path, "stored")
    _rezip(stored, zipfile.ZIP_STORED)  # other record layout: offsets come from the archive's own headers
    assert torch.equal(_values(stored)["embed.weight"], expected)
    deflated = _dcp(tmp_path, "deflated")
    _rezip(deflated, zipfile.ZIP_DEFLATED)
    _refused(deflated, "stored compressed")


# --- only regular files are read ------------------------------------------------------------------------


def _cli_refuses(target: str, pattern: str) -> None:
    result = run_modscope("summary", target, timeout=60)  # a FIFO used to block here forever
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: ") and pattern in lines[0], result.stderr


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    _cli_refuses(str(fifo), "is a FIFO (named pipe), not a regular file")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "only.safetensors")
    _cli_refuses(str(folder), "only.safetensors is a FIFO")


def test_devices_sockets_and_folders_where_a_file_belongs_are_refused(tmp_path):
    _refused("/dev/null", "is a character device")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "model.pt"))
        _refused(tmp_path / "model.pt", "is a socket")
    finally:
        sock.close()
    dcp = _dcp(tmp_path)
    os.unlink(dcp / ".metadata")
    (dcp / ".metadata").mkdir()
    _refused(dcp, "is a directory, not a regular file")
    index = _sharded(tmp_path)
    shard = sorted(p for p in index.parent.iterdir() if p.suffix == ".safetensors")[0]
    os.unlink(shard)
    os.mkfifo(shard)
    _refused(index, "is a FIFO")


def test_the_cli_reports_a_device_and_hostile_headers_in_one_line(tmp_path):
    _cli_refuses("/dev/zero", "is a character device")
    deep = _write(tmp_path / "deep.safetensors", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"")
    _cli_refuses(str(deep), "nests 100001 levels deep")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", {"a": torch.ones(2)})
    path.chmod(0)
    _cli_refuses(str(path), "cannot read")


def test_dicts_nested_past_the_cap_are_refused():
    from modscope.checkpoint import nested

    fine = nested.build({"w": tuple(str(i) for i in range(nested.MAX_NESTING)) + ("w",)}, {"w"})
    assert fine.count() == 1
    with pytest.raises(CheckpointError, match="nests dicts more than 1000 deep"):
        nested.build({"w": tuple(str(i) for i in range(100_000)) + ("w",)}, {"w"})
