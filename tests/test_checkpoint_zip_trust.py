"""torch.save zips, legacy files and TorchScript archives: checked against the file, read the same as torch,
and never run. Files are real (torch.save, torch.jit.save, re-zipped with Python's zipfile) or hand-built
where a hostile one is needed."""
from __future__ import annotations

import collections
import io
import pickle
import re
import struct
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from modscope.checkpoint import open_checkpoint
from modscope.cli import app
from modscope.errors import CheckpointError, UnsafeLoadError
from modscope.load.target import load_model
from tests.conftest import run_modscope

SMALL = "tests/checkpoint_files.py:Small"


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(result, pattern: str = ""):
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert code == 2, (code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: "), result.stderr
    assert pattern in lines[0], lines[0]


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    return {"w": torch.randn(3, 5), "idx": torch.arange(7), "half": torch.randn(4).half(), "view": base[:, 1:4],
            "cplx": torch.randn(3, dtype=torch.complex64), "flag": torch.tensor([True, False])}  # fmt: skip


def _rezip(src: Path, dst: Path, method: int, edit=None) -> Path:
    """``src``'s records rewritten by Python's zipfile (no alignment padding, no data descriptors)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", method) as b:
        for info in a.infolist():
            data = a.read(info.filename)
            b.writestr(info.filename, edit(info.filename, data) if edit else data)
    return dst


def _assert_reads_like_torch(path: Path, expected: dict[str, torch.Tensor]) -> None:
    with open_checkpoint(str(path)) as ckpt:
        assert set(ckpt.entries()) == set(expected)
        for name, value in expected.items():
            assert torch.equal(ckpt.read(name), value), name
            flat = torch.empty(value.numel(), dtype=value.dtype)
            ckpt.read_into(name, 0, flat)
            assert torch.equal(flat, value.reshape(-1)), name


# --- zip archives written by other tools ------------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_rezipped_archives_read_the_values_torch_reads(tmp_path, method):
    state = _state()
    orig = tmp_path / "orig.pt"
    torch.save(state, orig)
    copy = _rezip(orig, tmp_path / "copy.pt", method)
    for name, value in torch.load(copy, weights_only=True).items():
        assert torch.equal(value, state[name])  # torch reads it: the file is fine
    _assert_reads_like_torch(copy, state)
    result = _cli("diff", str(orig), str(copy))  # every tensor "changed" before (values 1e18 off)
    assert result.exit_code == 0 and "identical" in result.stdout, (result.stdout, result.stderr)
    torch.save(load_model(SMALL).state_dict(), orig)
    result = _cli("summary", SMALL, "--weights", str(_rezip(orig, copy, method)), "--json")
    assert result.exit_code == 0, result.stderr


def test_big_endian_archives_are_byte_swapped(tmp_path):
    state = {"w": torch.randn(3, 5), "idx": torch.arange(7), "half": torch.randn(4).half(), "c": torch.randn(2, dtype=torch.complex128)}
    orig = tmp_path / "orig.pt"
    torch.save(state, orig)
    swapped = {f"data/{i}": value.numpy().byteswap().tobytes() for i, value in enumerate(state.values())}

    def to_big(name: str, data: bytes) -> bytes:
        folder, _, rest = name.partition("/")
        return b"big" if rest == "byteorder" else swapped.get(rest, data)

    big = _rezip(orig, tmp_path / "big.pt", zipfile.ZIP_STORED, to_big)
    for name, value in torch.load(big, weights_only=True).items():
        assert torch.equal(value, state[name])  # what the file says, as torch reads it
    _assert_reads_like_torch(big, state)
    result = run_modscope("diff", str(orig), str(big))  # segfaulted (exit 139) before
    assert result.returncode == 0 and "identical" in result.stdout, (result.returncode, result.stderr)


def test_unknown_byteorder_is_refused(tmp_path):
    torch.save(_state(), tmp_path / "a.pt")
    odd = _rezip(tmp_path / "a.pt", tmp_path / "odd.pt", 0, lambda n, d: b"middle" if n.endswith("/byteorder") else d)
    _one_line_error(_cli("diff", str(odd), str(odd)), "byteorder")


def _pickle_claiming(numel: int, key: str = "0", size: tuple = None, stride: tuple = (1,)) -> bytes:
    """A data.pkl holding one float tensor whose storage declares ``numel`` elements (viewed as ``size`` with
    ``stride``; default: all of it, flat)."""
    size = (numel,) if size is None else size

    class Storage:
        pass

    storage = Storage()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, size, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, key, "cpu", numel) if obj is storage else None

    out = io.BytesIO()
    Pickler(out, protocol=2).dump({"w": Tensor()})
    return out.getvalue()


def _archive(path: Path, records: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in records.items():
            z.writestr(f"archive/{name}", data)
    return path


@pytest.mark.parametrize(
    "numel, data, pattern",
    [(10**15, b"\0" * 16, "declares 1000000000000000 elements"), (8, b"\0" * 16, "record holds 16 bytes")],
    ids=["1e15 elements in a 1 KB file", "record shorter than its storage"],
)
def test_declared_sizes_must_fit_their_records(tmp_path, numel, data, pattern):
    path = _archive(tmp_path / "claims.pt", {"data.pkl": _pickle_claiming(numel), "byteorder": b"little", "data/0": data})
    with pytest.raises(CheckpointError, match=pattern):
        open_checkpoint(str(path))
    for args in (("diff", str(path), str(path)), ("summary", str(path)), ("check", SMALL, "--weights", str(path)),
                 ("summary", SMALL, "--weights", str(path))):  # fmt: skip
        _one_line_error(_cli(*args), pattern)


def test_views_must_fit_their_storage(tmp_path):
    state = {"w": torch.randn(4, 4)}
    torch.save(state, tmp_path / "a.pt")
    short = _rezip(tmp_path / "a.pt", tmp_path / "short.pt", 0, lambda n, d: d[:32] if n.endswith("data/0") else d)
    _one_line_error(_cli("diff", str(short), str(short)), "record holds 32")


@pytest.mark.parametrize("stride", [(-1, 1), (3, -1)])
def test_views_torch_cannot_represent_are_refused(tmp_path, stride):
    """torch's meta rebuild quietly turns negative strides into contiguous ones (values read in the wrong
    order, exit 0 before); torch.load itself refuses such a file."""
    data = _pickle_claiming(6, size=(2, 3), stride=stride)
    path = _archive(tmp_path / "strides.pt", {"data.pkl": data, "byteorder": b"little", "data/0": b"\0" * 24})
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="cannot represent"):
        open_checkpoint(str(path))
    _one_line_error(_cli("summary", str(path)), "cannot represent")


_CENTRAL = {  # offsets inside the first central directory entry
    "name length": (28, b"\xff\xff"),  # a traceback (exit 3) before
    "sizes": (20, b"\xff" * 8),
    "header offset": (42, b"\x00\x00\x00\x7f"),
    "signature": (0, b"XXXX"),
    "compression method": (10, b"\x63\x00"),
}


@pytest.mark.parametrize("field", list(_CENTRAL))
def test_corrupt_central_directory_is_one_line(tmp_path, field):
    torch.save(_state(), tmp_path / "a.pt")
    data = bytearray((tmp_path / "a.pt").read_bytes())
    at, garbage = _CENTRAL[field]
    at += data.index(b"PK\x01\x02")
    data[at : at + len(garbage)] = garbage
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    for args in (("diff", str(tmp_path / "bad.pt"), str(tmp_path / "a.pt")), ("summary", str(tmp_path / "bad.pt")),
                 ("check", SMALL, "--weights", str(tmp_path / "bad.pt"))):  # fmt: skip
        _one_line_error(_cli(*args), "bad.pt")


def test_inflating_pickle_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/version", b"3\n")
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(256):
                f.write(chunk)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="over modscope's limit"):
            open_checkpoint(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    _one_line_error(_cli("diff", str(path), str(path)), "limit")
    tracemalloc.start()
    try:  # read as a saved whole model (audit, summary of a model file): torch would inflate it first
        with pytest.raises(CheckpointError, match="over modscope's limit"):
            load_model(str(path), trust=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    _one_line_error(_cli("audit", str(path)), "limit")


def test_deflated_records_that_inflate_to_other_bytes_are_refused(tmp_path):
    torch.save({"w": torch.randn(64)}, tmp_path / "a.pt")
    copy = _rezip(tmp_path / "a.pt", tmp_path / "d.pt", zipfile.ZIP_DEFLATED)
    data = bytearray(copy.read_bytes())
    for found in re.finditer(rb"PK\x01\x02", bytes(data)):  # central directory entries
        entry = found.start()
        (name_len,) = struct.unpack("<H", data[entry + 28 : entry + 30])
        if data[entry + 46 : entry + 46 + name_len].endswith(b"/data/0"):
            data[entry + 16] ^= 1  # its CRC
    copy.write_bytes(bytes(data))
    with open_checkpoint(str(copy)) as ckpt:
        with pytest.raises(CheckpointError, match="inflates to other bytes"):
            ckpt.read("w")


# --- legacy (non-zip) files -------------------------------------------------------------------------------


def _legacy(path: Path, numel: int, count: int, nbytes: int) -> Path:
    """A legacy torch.save file by hand: one float storage declaring ``numel``, written as ``count`` + bytes."""

    class Storage:
        pass

    storage = Storage()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (numel,), (1,), False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj is storage else None

    out = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(value, out, protocol=2)
    Pickler(out, protocol=2).dump({"w": Tensor()})
    pickle.dump(["0"], out, protocol=2)
    out.write(struct.pack("<q", count) + b"\0" * nbytes)
    path.write_bytes(out.getvalue())
    return path


def test_legacy_layout_is_checked_against_the_file(tmp_path):
    good = _legacy(tmp_path / "good.pt", 4, 4, 16)
    assert torch.equal(torch.load(good, weights_only=True)["w"], torch.zeros(4))  # the hand-built file is valid
    with open_checkpoint(str(good)) as ckpt:
        assert torch.equal(ckpt.read("w"), torch.zeros(4))
    cases = {"huge.pt": ((10**15, 10**15, 16), "ends early"), "liar.pt": ((10**15, 4, 16), "declares"),
             "short.pt": ((4, 4, 8), "ends early")}  # fmt: skip
    for name, (args, pattern) in cases.items():
        path = _legacy(tmp_path / name, *args)
        with pytest.raises(CheckpointError, match=pattern):
            open_checkpoint(str(path))
        _one_line_error(_cli("diff", str(path), str(path)), pattern)


def test_real_legacy_files_still_read(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _assert_reads_like_torch(tmp_path / "legacy.pt", state)


# --- TorchScript ------------------------------------------------------------------------------------------


@torch.jit.script
class _Helper:
    def __init__(self, x: int):
        self.x = x


class _Plain(nn.Module):
    """Attributes of every kind a scripted module holds: parameters, buffers (one non-persistent), a tied
    submodule, a ModuleDict, a plain tensor attribute and a TorchScript class (neither is in state_dict)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3, bias=False)
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("scratch", torch.ones(1), persistent=False)
        self.tied = self.a
        self.heads = nn.ModuleDict({"x": nn.Linear(3, 1)})
        self.plain = torch.zeros(3)
        self.helper = _Helper(2)

    def forward(self, x):
        return self.heads["x"](self.bn(self.a(x)) + self.scratch + self.plain + self.helper.x)


class _Trap(nn.Module):
    """Writes a marker file when the archive is loaded: its __setstate__ is code that torch.jit.load runs."""

    def __init__(self, marker: str):
        super().__init__()
        self.where = marker

    @torch.jit.export
    def __getstate__(self):
        return (self.where, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.where = state[0]
        written = torch.from_file(self.where, True, 1, dtype=torch.uint8)  # creates the file
        self.training = state[1] and written.numel() == 1

    def forward(self, x):
        return x


class _Hostile(nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.trap = _Trap(marker)

    def forward(self, x):
        return self.trap(self.lin(x))


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def _jit_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path)).state_dict()


@pytest.mark.parametrize("method", [None, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["torch", "stored", "deflated"])
def test_torchscript_tensors_are_read_without_loading(tmp_path, method):
    torch.manual_seed(0)
    path = _script(_Plain(), tmp_path / "plain.pt")
    expected = _jit_state(path)
    if method is not None:
        path = _rezip(path, tmp_path / "rezipped.pt", method)
    with open_checkpoint(str(path)) as ckpt:
        assert ckpt.format == "torchscript"
        assert list(ckpt.entries()) == list(expected)  # the same names, in state_dict() order
        for name, value in expected.items():
            assert torch.equal(ckpt.read(name), value), name
        assert ckpt.entries()["a.weight"].storage == ckpt.entries()["tied.weight"].storage


@pytest.fixture
def hostile_script(tmp_path):
    marker = tmp_path / "PWNED"
    path = _script(_Hostile(str(marker)), tmp_path / "hostile.pt")
    assert not marker.exists()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.pt").write_bytes(path.read_bytes())
    return marker, path, folder


def test_torchscript_never_runs_without_trust(hostile_script, tmp_path):
    marker, path, folder = hostile_script
    lin = {"lin.weight", "lin.bias"}
    with open_checkpoint(str(path)) as ckpt:
        assert set(ckpt.entries()) == lin
    for source in (path, folder):
        result = _cli("diff", str(source), str(source))
        assert result.exit_code == 0 and "identical" in result.stdout, result.stderr
        result = _cli("diff", str(source), str(path), "--keys-only")
        assert result.exit_code == 0, result.stderr
        for command in ("summary", "tree", "shared", "audit"):  # the architecture is code: refused
            _one_line_error(_cli(command, str(source)), "TorchScript archive: loading it runs code")
    with pytest.raises(UnsafeLoadError, match="pass --trust only if you trust its source"):
        load_model(str(path))
    # tensors read from records into a model built from code the user trusts: only names that differ
    result = _cli("check", SMALL, "--weights", str(path))
    assert result.exit_code == 1 and "lin.weight" in result.stdout, result.stderr
    _one_line_error(_cli("summary", SMALL, "--weights", str(path)), "does not load into")
    _one_line_error(_cli("summary", str(path), "--input", "1,2"), "TorchScript archive")
    result = run_modscope("graph", str(path), "--input", "1,2")  # the real CLI in its own process
    _one_line_error(result, "TorchScript archive")
    assert not marker.exists()


def test_trust_loads_torchscript_and_runs_its_code(hostile_script):
    marker, path, _ = hostile_script
    with open_checkpoint(str(path), trust=True) as ckpt:
        assert set(ckpt.entries()) == {"lin.weight", "lin.bias"}
    assert marker.exists()  # the archive really is hostile: --trust ran it, as documented


def test_state_restored_by_code_is_refused(tmp_path):
    class Keeps(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        @torch.jit.export
        def __getstate__(self):
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]):
            self.w = state[0]
            self.training = state[1]

        def forward(self, x):
            return x * self.w

    path = _script(Keeps(), tmp_path / "keeps.pt")
    with pytest.raises(UnsafeLoadError, match="__setstate__"):
        open_checkpoint(str(path))
    with open_checkpoint(str(path), trust=True) as ckpt:
        assert torch.equal(ckpt.read("w"), torch.ones(2))


def test_damaged_archives_are_one_line_errors_or_read(tmp_path):
    """Random byte damage to real torch.save, re-zipped, big-endian, legacy and TorchScript files: every
    outcome is a read or one ModscopeError line (never another exception, never a crash)."""
    from modscope.errors import ModscopeError

    state = _state()
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _rezip(tmp_path / "zip.pt", tmp_path / "deflated.pt", zipfile.ZIP_DEFLATED)
    _rezip(tmp_path / "zip.pt", tmp_path / "big.pt", zipfile.ZIP_STORED, lambda n, d: b"big" if n.endswith("/byteorder") else d)
    _script(_Plain(), tmp_path / "script.pt")
    sources = [(tmp_path / name).read_bytes() for name in ("zip.pt", "legacy.pt", "deflated.pt", "big.pt", "script.pt")]
    rng = __import__("random").Random(12)
    outcomes = collections.Counter()
    for case in range(200):
        data = bytearray(sources[case % len(sources)])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at : at + 4] = bytes(rng.randrange(256) for _ in range(4))
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)) :]
        path = tmp_path / "damaged.pt"
        path.write_bytes(bytes(data))
        try:
            with open_checkpoint(str(path)) as ckpt:
                for name in ckpt.entries():
                    ckpt.read(name)
            outcomes["read"] += 1
        except ModscopeError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes
