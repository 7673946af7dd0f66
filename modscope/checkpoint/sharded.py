"""Sharded checkpoints: ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` and their shards.

The index maps each name to a shard file next to it; every shard is opened with its own reader (headers
only for safetensors) and the union is presented as one state dict. A shard must resolve (symlinks
followed) inside the index's folder, or the read is refused.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from modscope.checkpoint.base import CheckpointReader, TensorMeta
from modscope.checkpoint.guard import contained, load_json, read_bytes, regular_file
from modscope.errors import CheckpointError


#: an index is a small JSON file; larger ones are refused before parsing
MAX_INDEX = 256 * 1024 * 1024


def read_index(path: str) -> dict[str, str]:
    """name -> shard file name, validated: a JSON object whose ``weight_map`` maps strings to strings."""
    document = load_json(read_bytes(path, limit=MAX_INDEX, what="sharded-checkpoint index"), f"{path} is not a valid index")
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise CheckpointError(f"{path} is not a sharded-checkpoint index: no \"weight_map\" of name -> shard file")
    return weight_map


def shard_roots(path: str) -> tuple[str, ...]:
    """Folders an index's shards may resolve into: the index's own folder, and for a Hugging Face cache
    snapshot (``<repo>/snapshots/<rev>/``, every file a symlink into ``<repo>/blobs/``) that blobs folder."""
    folder = os.path.dirname(os.path.abspath(path))
    blobs = os.path.join(folder, os.pardir, os.pardir, "blobs")
    cache = os.path.basename(os.path.dirname(folder)) == "snapshots" and os.path.isdir(blobs)
    return (folder, blobs) if cache else (folder,)


class ShardedReader(CheckpointReader):
    format = "index"

    def __init__(self, path: str, open_file: Callable[[str], CheckpointReader]):
        super().__init__(path)
        weight_map = read_index(path)
        roots = shard_roots(path)
        self._shards: dict[str, CheckpointReader] = {}
        self._where: dict[str, CheckpointReader] = {}
        self._entries: dict[str, TensorMeta] = {}
        try:
            for shard in dict.fromkeys(weight_map.values()):
                shard_path = contained(roots, shard, path)
                if not os.path.lexists(shard_path):
                    raise CheckpointError(f"{path} lists shard {shard!r}, which is missing")
                regular_file(shard_path)
                self._shards[shard] = open_file(shard_path)
            for name, shard in weight_map.items():
                reader = self._shards[shard]
                meta = reader.entries().get(name)
                if meta is None:
                    raise CheckpointError(f"{path} places {name!r} in {shard}, which does not hold it")
                self._entries[name] = meta
                self._where[name] = reader
        except BaseException:
            self.close()
            raise
        kinds = {r.format for r in self._shards.values()}
        self.format = f"index ({', '.join(sorted(kinds))} shards)" if kinds else "index"

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def read(self, name: str) -> torch.Tensor:
        return self._where[name].read(name)

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        self._where[name].read_into(name, start, out)

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        return self._where[name].locate(name, start, count)

    def close(self) -> None:
        for reader in self._shards.values():
            reader.close()
