"""Checkpoints in every common format behind one interface.

>>> with modscope.open_checkpoint("model.safetensors") as ckpt:
...     ckpt.entries()["embed.weight"].shape      # from the header alone
...     ckpt.read("embed.weight")                 # the values, when asked

Sources: ``torch.save`` files (zip and legacy), safetensors, sharded ``*.index.json``, torch.distributed.checkpoint
folders, a model TARGET (``file.py:Net``) or an ``nn.Module``. ``key`` picks a state dict inside a nested
checkpoint (``state_dict``, ``model``, ``ema``); ``trust`` allows unpickling arbitrary objects and loading
TorchScript archives (both run code from the file); without it a TorchScript archive's tensors are read
from its records, nothing in it run.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from modscope.checkpoint import detect as _detect
from modscope.checkpoint import nested
from modscope.checkpoint.base import CheckpointReader, TensorMeta
from modscope.errors import CheckpointError

__all__ = ["Checkpoint", "CheckpointReader", "TensorMeta", "open_checkpoint", "open_reader", "is_checkpoint_path"]


class Checkpoint:
    """One state dict inside a checkpoint: names relative to the chosen ``key``, metadata, lazy reads."""

    def __init__(self, reader: CheckpointReader, key: str | None = None):
        self.reader = reader
        try:
            chosen = nested.select(reader.containers(), list(reader.entries()), key, reader.path)
        except BaseException:
            reader.close()
            raise
        self.key = chosen.key or None
        self.candidates = chosen.candidates
        prefix = f"{chosen.key}." if chosen.key else ""
        full = reader.entries()
        self._full = {name[len(prefix) :]: name for name in chosen.names}
        self._entries = {local: full[name] for local, name in self._full.items()}

    @property
    def path(self) -> str:
        return self.reader.path

    @property
    def format(self) -> str:
        return self.reader.format

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def read(self, name: str) -> torch.Tensor:
        return self.reader.read(self._full[name])

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        self.reader.read_into(self._full[name], start, out)

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        return self.reader.locate(self._full[name], start, count)

    def metadata(self) -> dict[str, Any] | None:
        """Per-module ``_metadata`` (versions) of a pickled state_dict, relative to the chosen key."""
        found = self.reader.metadata()
        if not found:
            return None
        if not self.key:
            return dict(found)
        out = {}
        for name, info in found.items():
            if name == self.key:
                out[""] = info
            elif name.startswith(self.key + "."):
                out[name[len(self.key) + 1 :]] = info
        return out or None

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_checkpoint(
    source: str | nn.Module,
    *,
    key: str | None = None,
    trust: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> Checkpoint:
    """Open any checkpoint or model TARGET; nothing but headers/metadata is read until values are asked for.

    ``kwargs`` are constructor arguments when ``source`` is a model spec (``file.py:Net``).
    """
    return Checkpoint(open_reader(source, trust=trust, kwargs=kwargs), key)


def open_reader(source: str | nn.Module, *, trust: bool = False, kwargs: dict[str, Any] | None = None) -> CheckpointReader:
    """The format reader for ``source`` (full, unselected names)."""
    from modscope.checkpoint.module import ModuleReader
    from modscope.load.target import is_object_spec, load_model

    if isinstance(source, nn.Module):
        return ModuleReader(type(source).__name__, source)
    source = str(source)
    if is_object_spec(source) and not os.path.exists(source):
        return ModuleReader(source, load_model(source, kwargs=kwargs, trust=trust))
    kind, path = _detect.detect(source)
    if kind == _detect.TORCHSCRIPT:  # code: loaded only with trust; otherwise its records are read inertly
        if trust:
            return ModuleReader(source, load_model(path, trust=True), fmt="torchscript")
        from modscope.checkpoint.torchscript import open_torchscript

        return open_torchscript(path)
    return _open_file(kind, path, trust)


def _open_file(kind: str, path: str, trust: bool) -> CheckpointReader:
    if kind == _detect.SAFETENSORS:
        from modscope.checkpoint.safetensors import SafetensorsReader

        return SafetensorsReader(path)
    if kind == _detect.TORCH:
        from modscope.checkpoint.torchfile import open_torch_zip

        return open_torch_zip(path, trust=trust)
    if kind == _detect.LEGACY:
        from modscope.checkpoint.torchfile import open_torch_legacy

        return open_torch_legacy(path, trust=trust)
    if kind == _detect.DCP:
        from modscope.checkpoint.dcp import DcpReader

        return DcpReader(path, trust=trust)
    from modscope.checkpoint.sharded import ShardedReader

    def open_shard(shard: str) -> CheckpointReader:
        shard_kind, shard_path = _detect.detect(shard)
        if shard_kind in (_detect.INDEX, _detect.DCP, _detect.TORCHSCRIPT):
            raise CheckpointError(f"{path}: shard {shard} is not a safetensors or torch.save file")
        return _open_file(shard_kind, shard_path, trust)

    return ShardedReader(path, open_shard)


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json", ".distcp", ".tar")


def is_checkpoint_path(target: str) -> bool:
    """True when ``target`` names a checkpoint (not a model spec, TorchScript archive or whole pickled model)."""
    from modscope.load.target import is_object_spec

    if is_object_spec(target) and not os.path.exists(target):
        return False
    try:
        kind, path = _detect.detect(target)
    except CheckpointError:  # unreadable, or a FIFO/device/socket: report it as a checkpoint when it is named
        special = os.path.exists(target) and not os.path.isfile(target)  # like one, or not a regular file
        return special or target.endswith(_CHECKPOINT_SUFFIXES)
    if kind == _detect.TORCHSCRIPT:
        return False
    if kind == _detect.TORCH:
        return _detect.holds_mapping(path)
    return True
