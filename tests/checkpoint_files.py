"""Real checkpoints of every format, written with torch, safetensors and torch.distributed.checkpoint."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file


class Small(nn.Module):
    """A little of everything a state dict holds: weights, BatchNorm buffers (one int64), a tied weight."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 4))
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as in language models
        self.register_buffer("positions", torch.arange(4), persistent=False)

    def forward(self, x):
        return self.head(self.body(self.embed(x).mean(1)))


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return Small().state_dict()


def untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor its own contiguous copy (safetensors refuses shared storage)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def write_torch(path: Path, obj, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file(untied(state), str(path))
    return path


def write_sharded(folder: Path, state: dict[str, torch.Tensor], kind: str = "safetensors", shards: int = 2) -> Path:
    """A Hugging Face style sharded checkpoint; returns the index file."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(state)
    ext = "safetensors" if kind == "safetensors" else "bin"
    stem = "model" if kind == "safetensors" else "pytorch_model"
    weight_map = {}
    for i in range(shards):
        part = {n: state[n] for n in names[i::shards]}
        file = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        if kind == "safetensors":
            write_safetensors(folder / file, part)
        else:
            torch.save(untied(part), folder / file)
        weight_map.update({n: file for n in part})
    index = folder / f"{stem}.{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def write_dcp(folder: Path, state: dict) -> Path:
    """torch.distributed.checkpoint in this one process (no process group needed)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(folder))
    return folder


def checksums(*paths: Path) -> dict[str, str]:
    """sha256 and mtime of every file under ``paths`` (to prove nothing was written)."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = (hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mtime_ns)
    return out
