"""Sharded checkpoints: ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` and their shards.

The index maps each name to a shard file next to it; every shard is opened with its own reader (headers
only for safetensors) and the union is presented as one state dict.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import torch

from modscope.checkpoint.base import CheckpointReader, TensorMeta
from modscope.errors import CheckpointError


def read_index(path: str) -> dict[str, str]:
    """name -> shard file name, validated: shards must sit in the index's folder."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid index: {exc}")
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path} is not a sharded-checkpoint index: no \"weight_map\" of name -> shard file")
    for shard in set(weight_map.values()):
        if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
            raise CheckpointError(f"{path} names a shard outside its folder: {shard!r}")
    return weight_map


class ShardedReader(CheckpointReader):
    format = "index"

    def __init__(self, path: str, open_file: Callable[[str], CheckpointReader]):
        super().__init__(path)
        weight_map = read_index(path)
        folder = os.path.dirname(os.path.abspath(path))
        self._shards: dict[str, CheckpointReader] = {}
        self._where: dict[str, CheckpointReader] = {}
        self._entries: dict[str, TensorMeta] = {}
        try:
            for shard in dict.fromkeys(weight_map.values()):
                shard_path = os.path.join(folder, shard)
                if not os.path.isfile(shard_path):
                    raise CheckpointError(f"{path} lists shard {shard!r}, which is missing")
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
