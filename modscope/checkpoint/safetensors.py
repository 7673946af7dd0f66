"""safetensors files: names, shapes and dtypes from the JSON header alone; values read by file offset.

Layout: 8-byte little-endian header length N, N bytes of JSON ``{name: {dtype, shape, data_offsets: [begin,
end]}, "__metadata__": {...}}``, then the data; offsets are relative to the end of the header.
"""
from __future__ import annotations

import json
from math import prod

import torch

from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta, file_size
from modscope.errors import CheckpointError

_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit

_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64", "C128": "complex128",
}  # fmt: skip


def looks_like_safetensors(head: bytes) -> bool:
    """The first bytes of a file: a header length, then a JSON object (whether the length fits the file is
    the reader's to check, so a truncated file is reported as such)."""
    return len(head) >= 9 and int.from_bytes(head[:8], "little") >= 2 and head[8:9] == b"{"


class SafetensorsReader(CheckpointReader):
    format = "safetensors"

    def __init__(self, path: str):
        super().__init__(path)
        self._files = FileSpans()
        self._entries, self._offsets, self.header_metadata = _parse(path)

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def read(self, name: str) -> torch.Tensor:
        meta = self._entries[name]
        return self._files.tensor(self.path, self._offsets[name], meta.shape, meta.dtype)

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        self._files.read_into(self.path, self._offsets[name] + start * out.element_size(), out)

    def locate(self, name: str, start: int, count: int) -> tuple[str, int]:
        return self.path, self._offsets[name] + start * self._entries[name].dtype.itemsize

    def close(self) -> None:
        self._files.close()


def _parse(path: str):
    size = file_size(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated: too short for a safetensors header")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path} is truncated or not a safetensors file: header of {n} bytes in a {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {exc}")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header: not a JSON object")
    data_start = 8 + n
    data_size = size - data_start
    entries: dict[str, TensorMeta] = {}
    offsets: dict[str, int] = {}
    metadata = header.pop("__metadata__", None)
    for name, info in sorted(header.items(), key=_data_start):  # file order: reads then go forward
        try:
            dtype = getattr(torch, _DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{path} has a corrupt safetensors header: bad entry for {name!r}")
        if end - begin != prod(shape) * dtype.itemsize or begin < 0 or any(d < 0 for d in shape):
            raise CheckpointError(f"{path} has a corrupt safetensors header: {name!r} has inconsistent offsets")
        if end > data_size:
            raise CheckpointError(
                f"{path} is truncated: {name!r} ends at byte {data_start + end} but the file has {size} bytes"
            )
        entries[name] = TensorMeta(shape, dtype, storage=(path, begin), offset=0)
        offsets[name] = data_start + begin
    return entries, offsets, metadata if isinstance(metadata, dict) else None


def _data_start(item) -> int:
    try:
        return int(item[1]["data_offsets"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        return -1  # reported as a bad entry below
