"""safetensors files, sharded indexes, torch.distributed.checkpoint folders and FIFOs: written by the real
writers (safetensors, torch.distributed.checkpoint), then mutated deterministically."""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.checkpoint_files import write_dcp


def write_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
    return path


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a safetensors file."""
    blob = path.read_bytes()
    (length,) = struct.unpack_from("<Q", blob)
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def raw_safetensors(path: Path, header: dict | str | bytes, data: bytes, *, length: int | None = None) -> Path:
    """A safetensors file from any header (dict, JSON text or bytes) and data; ``length`` may lie."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    declared = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", declared) + header + data)
    return path


def mutated_header(src: Path, dst: Path, change) -> Path:
    """``src`` with its header passed through ``change(header) -> header`` (data kept)."""
    header, data = split_safetensors(src)
    return raw_safetensors(dst, change(copy.deepcopy(header)), data)


def deep_json(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


def many_entries(count: int, dotted_parts: int = 4) -> tuple[dict, bytes]:
    """A header of ``count`` one-element float32 tensors with ``dotted_parts``-part names, and its data."""
    header = {}
    for i in range(count):
        name = ".".join(["layer"] * (dotted_parts - 2) + [str(i), "w"])
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    return header, bytes(4 * count)


# --- sharded indexes -------------------------------------------------------------------------------------------


def write_sharded(folder: Path, state: dict[str, torch.Tensor], *, kind: str = "safetensors", shards: int = 2) -> Path:
    """A Hugging Face style sharded checkpoint; returns the index file."""
    folder.mkdir(parents=True, exist_ok=True)
    names, weight_map = list(state), {}
    ext, stem = ("safetensors", "model") if kind == "safetensors" else ("bin", "pytorch_model")
    for i in range(shards):
        part = {n: state[n].clone() for n in names[i::shards]}
        file = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        if kind == "safetensors":
            write_safetensors(folder / file, part)
        else:
            torch.save(part, folder / file)
        weight_map.update({n: file for n in part})
    index = folder / f"{stem}.{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def retargeted_index(src_folder: Path, dst_folder: Path, change) -> Path:
    """A copy of a sharded folder whose index document went through ``change(doc) -> doc | str``."""
    shutil.copytree(src_folder, dst_folder, symlinks=True)
    index = next(dst_folder.glob("*.index.json"))
    doc = change(json.loads(index.read_text()))
    index.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return index


# --- torch.distributed.checkpoint ----------------------------------------------------------------------------


def load_metadata(folder: Path):
    """Our own DCP metadata, read with the plain unpickler (we wrote it)."""
    import torch.distributed.checkpoint.filesystem  # noqa: F401  (classes the metadata names)

    with open(folder / ".metadata", "rb") as f:
        return pickle.load(f)


def mutated_dcp(src: Path, dst: Path, change) -> Path:
    """A copy of a DCP folder whose metadata went through ``change(metadata) -> metadata | bytes``."""
    shutil.copytree(src, dst, symlinks=True)
    changed = change(load_metadata(dst))
    (dst / ".metadata").write_bytes(changed if isinstance(changed, bytes) else pickle.dumps(changed))
    return dst


def storage_paths(value: str):
    """A metadata change: every storage item's relative_path set to ``value``."""

    def change(metadata):
        for info in metadata.storage_data.values():
            info.relative_path = value
        return metadata

    return change


def storage_numbers(offset: int | None = None, length: int | None = None):
    """A metadata change: the first storage item's offset and/or length replaced."""

    def change(metadata):
        info = next(iter(metadata.storage_data.values()))
        if offset is not None:
            info.offset = offset
        if length is not None:
            info.length = length
        return metadata

    return change


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path
