"""Refuse to build a Hugging Face/timm model with real weights that cannot fit in this machine's memory.

``modscope grads ./llama-70b`` would otherwise allocate and randomly fill 280 GB of float32 weights until
the kernel kills the process, with no word said. The architecture is built on meta first (no weights
allocated, a second or two for the largest models), its parameters and buffers are counted, and a model
whose weights alone would take more than a third of the memory available now is refused with one line saying
what to do instead (``MODSCOPE_AVAILABLE_MEMORY_BYTES`` overrides what the machine reports).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from modscope.core.text import human_bytes
from modscope.core.walk import visits
from modscope.errors import UsageError

#: the weights may take at most this share of the memory available: a backward pass holds as much again in
#: gradients, plus activations and the temporaries of random initialisation (grads on a 7.1 GiB bf16 model
#: was killed for memory with 16 GiB available)
MAX_SHARE = 1 / 3


def refuse_if_it_cannot_fit(target: str, meta_model: nn.Module, device=None) -> None:
    """UsageError when ``meta_model``'s tensors, built for real on ``device`` (None: the CPU), would take more
    than ``MAX_SHARE`` of the memory available there now."""
    needed = tensor_bytes(meta_model)
    available = available_bytes(device)
    if available is None or needed <= MAX_SHARE * available:
        return
    raise UsageError(
        f"{target}: its parameters and buffers alone take {human_bytes(needed)}, more than a third of the "
        f"{human_bytes(available)} of memory available (a pass also needs activations, and gradients): "
        "`modscope summary` runs on meta without weights (shapes, FLOPs, the memory estimate); for this command "
        "use a smaller config (--arg)"
    )


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, tied and shared ones once."""
    seen: dict[int, int] = {}
    for visit in visits(model):
        module = visit.module
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is not None:
                seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def available_bytes(device=None) -> int | None:
    """Free memory of a CUDA ``device`` (``torch.cuda.mem_get_info``), else MemAvailable from /proc/meminfo
    (what can be allocated without swapping); None where neither says."""
    override = os.environ.get("MODSCOPE_AVAILABLE_MEMORY_BYTES")
    if override is not None and override.isdigit():
        return int(override)
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
