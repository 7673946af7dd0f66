"""safetensors files: names, shapes and dtypes from the JSON header alone; values read by file offset.

Layout: 8-byte little-endian header length N, N bytes of JSON ``{name: {dtype, shape, data_offsets: [begin,
end]}, "__metadata__": {...}}``, then the data; offsets are relative to the end of the header.
"""
from __future__ import annotations

import os
from math import prod

import torch

from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta
from modscope.checkpoint.guard import load_json, open_regular, paused_gc, read_at
from modscope.errors import CheckpointError

#: the safetensors library's own limit on the JSON header
MAX_HEADER = 100 * 1000 * 1000
#: more dimensions than any torch kernel handles; a header claiming more is refused
MAX_DIMS = 64

_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64", "C128": "complex128",
}  # fmt: skip
_TORCH_DTYPES = {code: getattr(torch, name) for code, name in _DTYPES.items() if hasattr(torch, name)}


def looks_like_safetensors(head: bytes) -> bool:
    """The first bytes of a file: a header length, then a JSON object (whether the length fits the file is
    the reader's to check, so a truncated file is reported as such)."""
    return len(head) >= 9 and int.from_bytes(head[:8], "little") >= 2 and head[8:9] == b"{"


class SafetensorsReader(CheckpointReader):
    format = "safetensors"

    def __init__(self, path: str):
        super().__init__(path)
        self._files = FileSpans()
        (self._entries, self._offsets), self.header_metadata = _parse(path)

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
    """Validate the header against the file, as the safetensors library does, before any tensor is made."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise CheckpointError(f"{path} is empty")
        if size < 8:
            raise CheckpointError(f"{path} is truncated: too short for a safetensors header")
        n = int.from_bytes(read_at(fd, path, 0, 8), "little")
        if n > MAX_HEADER:
            raise CheckpointError(
                f"{path} declares a safetensors header of {n} bytes; the format allows at most {MAX_HEADER} (corrupt file?)"
            )
        if n > size - 8:
            raise CheckpointError(f"{path} is truncated or not a safetensors file: header of {n} bytes in a {size}-byte file")
        raw = read_at(fd, path, 8, n)
    finally:
        os.close(fd)
    header = load_json(raw, f"{path} has a corrupt safetensors header", max_depth=3)
    del raw  # a million-entry header: its text and its objects need not be held together
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header: not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise CheckpointError(f"{path} has a corrupt safetensors header: __metadata__ is not an object of strings")
    data_start = 8 + n
    data_size = size - data_start
    with paused_gc():
        return _validate(path, header, data_start, data_size), metadata


def _validate(path: str, header: dict, data_start: int, data_size: int):
    """name -> TensorMeta and name -> file offset, in file order; entries contiguous and covering the data."""
    spans = sorted(((_entry(path, name, info, data_size), name) for name, info in header.items()), key=_span)
    header.clear()  # its objects are no longer needed: the spans hold what was checked
    entries: dict[str, TensorMeta] = {}
    offsets: dict[str, int] = {}
    expected, previous = 0, None
    for (begin, end, dtype, shape), name in spans:  # file order: reads then go forward
        if begin != expected:
            what = f"overlaps {previous!r}" if begin < expected else f"leaves a gap of {begin - expected} bytes after {previous!r}"
            raise CheckpointError(
                f"{path} has a corrupt safetensors header: {name!r} (data bytes {begin}..{end}) {what}; "
                "tensors must be stored one after another"
            )
        expected, previous = end, name
        entries[name] = TensorMeta(shape, dtype, storage=(path, begin), offset=0)
        offsets[name] = data_start + begin
    if expected != data_size:
        raise CheckpointError(
            f"{path} has a corrupt safetensors header: its tensors end at data byte {expected}, "
            f"but {data_size} bytes of data follow the header"
        )
    return entries, offsets


def _entry(path: str, name: str, info, data_size: int) -> tuple[int, int, torch.dtype, tuple[int, ...]]:
    """(begin, end, dtype, shape) of one header entry, every field checked; offsets relative to the data."""
    try:
        dtype = _TORCH_DTYPES[info["dtype"]]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        numel = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise TypeError
            numel *= d
        if (
            type(shape) is list and len(shape) <= MAX_DIMS and type(begin) is int and type(end) is int
            and 0 <= begin <= end <= data_size and numel * dtype.itemsize == end - begin
        ):  # fmt: skip
            return begin, end, dtype, tuple(shape)
    except (KeyError, TypeError, ValueError):
        pass
    raise _fault(path, name, info, data_size)


def _fault(path: str, name: str, info, data_size: int) -> CheckpointError:
    """What exactly is wrong with a header entry that failed ``_entry``'s checks."""
    where = f"{path} has a corrupt safetensors header: {name!r}"
    if not isinstance(info, dict):
        return CheckpointError(f"{where} is not an object with dtype, shape and data_offsets")
    code = info.get("dtype")
    dtype = _TORCH_DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        return CheckpointError(f"{where} has dtype {_short(code)}, which modscope cannot read (known: {', '.join(_TORCH_DTYPES)})")
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return CheckpointError(f"{where} has shape {_short(shape)}, not a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        return CheckpointError(f"{where} has {len(shape)} dimensions (modscope reads at most {MAX_DIMS})")
    span = info.get("data_offsets")
    if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int and x >= 0 for x in span)):
        return CheckpointError(f"{where} has data_offsets {_short(span)}, not [begin, end] of non-negative integers")
    begin, end = span
    if begin > end:
        return CheckpointError(f"{where} has data_offsets [{begin}, {end}]: begin after end")
    if end > data_size:
        return CheckpointError(
            f"{path} is truncated: {name!r} ends at data byte {end} but only {data_size} bytes of data follow the header"
        )
    nbytes = (0 if 0 in shape else prod(shape)) * dtype.itemsize
    return CheckpointError(
        f"{where} has shape {_short(shape)} of {code} ({nbytes} bytes) but data_offsets [{begin}, {end}] hold {end - begin} bytes"
    )


def _span(item) -> tuple[int, int]:
    return item[0][0], item[0][1]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
