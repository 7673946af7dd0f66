"""torch.save zip archives, legacy files and TorchScript archives: written by torch's own writers
(``torch.save``, ``PyTorchFileWriter``, ``torch.jit.save``) or ``zipfile``, then mutated deterministically."""
from __future__ import annotations

import random
import struct
import zipfile
import zlib
from pathlib import Path

import torch
import torch.nn as nn

from tests.fuzz import pickles as pk

MODEL_SOURCE = '''"""The model the fuzz checkpoints are made for (written by tests/fuzz)."""
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 4))

    def forward(self, x):
        return self.body(x)
'''


class Net(nn.Module):
    """MODEL_SOURCE's Net, importable here (TorchScript needs the source of the class it scripts)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 4))

    def forward(self, x):
        return self.body(x)


def net_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of the fuzz model, with deterministic values."""
    torch.manual_seed(seed)
    net = Net()
    net.body[1].running_mean.uniform_(-1, 1)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _raw(t: torch.Tensor, byteorder: str) -> bytes:
    array = t.contiguous().numpy()
    return (array.byteswap() if byteorder == "big" else array).tobytes()


def crafted_zip(
    path: Path,
    tensors: dict[str, torch.Tensor],
    *,
    byteorder: str = "little",
    extra: dict[str, bytes] | None = None,
    claims: dict[str, dict] | None = None,
    records: dict[str, bytes | None] | None = None,
    top: bytes | None = None,
) -> Path:
    """A torch.save archive written with torch's PyTorchFileWriter from a pickle of our own making.

    ``extra``: more dict items (opcodes, e.g. payloads); ``claims``: per tensor, numbers to lie about
    (numel, size, stride, offset, dtype); ``records``: storage records to replace (None drops one);
    ``top``: opcodes for the whole pickled object instead of the dict.
    """
    claims, records = claims or {}, records or {}
    items, data = [], {}
    for i, (name, t) in enumerate(tensors.items()):
        key, lie = str(i), claims.get(name, {})
        ref = pk.tensor_ref(
            key, lie.get("dtype", _dtype_name(t)), lie.get("numel", t.numel()), lie.get("size", list(t.shape)),
            stride=lie.get("stride"), offset=lie.get("offset", 0),
        )
        items.append((name, ref))
        data[key] = _raw(t, byteorder)
    items += list((extra or {}).items())
    pickled = pk.whole(top if top is not None else pk.dict_(items))
    writer = torch._C.PyTorchFileWriter(str(path))
    writer.write_record("data.pkl", pickled, len(pickled))
    writer.write_record(".format_version", b"1", 1)
    writer.write_record(".storage_alignment", b"64", 2)
    writer.write_record("byteorder", byteorder.encode(), len(byteorder))
    for key, raw in data.items():
        raw = records.get(key, raw)
        if raw is not None:
            writer.write_record(f"data/{key}", raw, len(raw))
    writer.write_end_of_file()
    del writer
    return path


def rewritten(src: Path, dst: Path, compression: int) -> Path:
    """The same archive repackaged by Python's zipfile (what repackaging tools do): other offsets, no
    alignment, optionally deflated records."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", compression=compression) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
    return dst


def truncated(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def zip_regions(path: Path) -> dict[str, list[int]]:
    """Byte positions of the local headers, the central directory and its end record."""
    blob = path.read_bytes()
    eocd = blob.rfind(b"PK\x05\x06")
    central = struct.unpack_from("<I", blob, eocd + 16)[0]
    local = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)
            local += range(info.header_offset, info.header_offset + 30 + name_len)
    return {"local": local, "central": list(range(central, eocd)), "eocd": list(range(eocd, len(blob)))}


def flipped(src: Path, dst: Path, positions: list[int], seed: int, flips: int = 1) -> Path:
    """``src`` with ``flips`` bits flipped at seeded positions among ``positions``."""
    rng = random.Random(seed)
    blob = bytearray(src.read_bytes())
    for _ in range(flips):
        at = rng.choice(positions)
        blob[at] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(blob))
    return dst


def _local_header(name: bytes, method: int, crc: int, csize: int, usize: int) -> bytes:
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, usize, len(name), 0) + name


def _central(name: bytes, method: int, crc: int, csize: int, usize: int, offset: int) -> bytes:
    return (
        struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, usize, len(name),
                    0, 0, 0, 0, 0, offset)
        + name
    )  # fmt: skip


def raw_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip from (name, stored bytes, method, crc, declared uncompressed size): sizes may lie."""
    out, central = bytearray(), bytearray()
    for name, stored, method, crc, usize in entries:
        offset = len(out)
        out += _local_header(name.encode(), method, crc, len(stored), usize) + stored
        central += _central(name.encode(), method, crc, len(stored), usize, offset)
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0)
    path.write_bytes(bytes(out))
    return path


def zip_bomb(path: Path, inflated: int, *, lie: bool = False) -> Path:
    """A ~KB-per-MiB torch-like archive whose data.pkl (one huge bytes object) inflates to ``inflated`` bytes;
    ``lie``: the zip headers declare 1 KiB instead."""
    chunk = 16 << 20
    head = b"\x80\x04\x8e" + struct.pack("<Q", inflated - 12)  # PROTO 4, BINBYTES8 n ... STOP
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = squeeze.compress(head) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block_maker = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block_maker.compress(bytes(chunk)) + block_maker.flush(zlib.Z_FULL_FLUSH)
    body = inflated - len(head) - 1
    crc = zlib.crc32(head)
    zeros = bytes(chunk)
    for _ in range(body // chunk):
        crc = zlib.crc32(zeros, crc)
    tail_maker = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = bytes(body % chunk) + b"."
    crc = zlib.crc32(tail, crc)
    stream += block * (body // chunk) + tail_maker.compress(tail) + tail_maker.flush()
    stem = path.stem
    entries = [
        (f"{stem}/data.pkl", stream, 8, crc, 1024 if lie else inflated),
        (f"{stem}/byteorder", b"little", 0, zlib.crc32(b"little"), 6),
        (f"{stem}/version", b"3\n", 0, zlib.crc32(b"3\n"), 2),
    ]
    return raw_zip(path, entries)


# --- legacy (pre-1.6) torch.save ---------------------------------------------------------------------------

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def crafted_legacy(
    path: Path, tensors: dict[str, torch.Tensor], *, extra: dict[str, bytes] | None = None,
    claims: dict[str, dict] | None = None, data_numel: dict[str, int] | None = None,
) -> Path:
    """A legacy torch.save file of our own making: the magic, protocol and sys-info pickles, the object
    pickle, the storage keys, then each storage as (numel int64, bytes); ``data_numel`` lies in that header."""
    claims, data_numel = claims or {}, data_numel or {}
    items, storages = [], []
    for i, (name, t) in enumerate(tensors.items()):
        key, lie = str(i), claims.get(name, {})
        items.append((name, pk.tensor_ref(
            key, _dtype_name(t), lie.get("numel", t.numel()), lie.get("size", list(t.shape)), legacy=True
        )))
        storages.append((key, data_numel.get(name, t.numel()), _raw(t, "little")))
    items += list((extra or {}).items())
    out = bytearray()
    for value in (LEGACY_MAGIC, 1001, LEGACY_SYS_INFO):
        out += pk.whole(pk.encode(value))
    out += pk.whole(pk.dict_(items))
    out += pk.whole(pk.encode([key for key, _, _ in storages]))
    for _, numel, raw in storages:
        out += struct.pack("<q", numel) + raw
    path.write_bytes(bytes(out))
    return path


# --- TorchScript ---------------------------------------------------------------------------------------------


class _Touching(nn.Module):
    """Its ``__setstate__``, run by torch.jit.load, creates the file named in its state."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.ones(2, 2))

    def forward(self, x):
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self):
        return (self.marker, self.weight)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor]):
        self.marker = state[0]
        self.training = False
        touched = torch.from_file(state[0], shared=True, size=1, dtype=torch.uint8)
        self.weight = state[1] + touched.sum() * 0


def torchscript_payload(path: Path, marker: str) -> Path:
    """A TorchScript archive whose loading (its code) creates ``marker``."""
    torch.jit.save(torch.jit.script(_Touching(marker)), str(path))
    return path


def torchscript_plain(path: Path, net: nn.Module) -> Path:
    torch.jit.save(torch.jit.script(net), str(path))
    return path
