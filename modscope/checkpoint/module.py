"""A live model as a checkpoint source: the tensors its ``state_dict()`` would hold, without the recursion.

``nn.Module.state_dict`` recurses once per nesting level; this walks ``modscope.core.walk.visits``
instead, so a 2,000-deep model works. Custom ``_save_to_state_dict`` overrides and state_dict hooks are not
run (they rarely change tensor names; extra state is not a tensor).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.checkpoint.memory import TensorDictReader
from modscope.core.walk import join, visits
from modscope.errors import CheckpointError


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor for every parameter and persistent buffer, under every name it is reachable by."""
    out: dict[str, torch.Tensor] = {}
    for visit in visits(model):
        module = visit.module
        non_persistent = getattr(module, "_non_persistent_buffers_set", set())
        for key, tensor in module._parameters.items():
            if tensor is not None:
                out[join(visit.name, key)] = tensor
        for key, tensor in module._buffers.items():
            if tensor is not None and key not in non_persistent:
                out[join(visit.name, key)] = tensor
    return out


class ModuleReader(TensorDictReader):
    """The state of an ``nn.Module`` (a TARGET like ``file.py:Net``, a TorchScript or a trusted whole-model pickle)."""

    def __init__(self, label: str, model: nn.Module, *, fmt: str = "model"):
        tensors = state_tensors(model)
        lazy = [name for name, t in tensors.items() if is_lazy(t)]
        if lazy:
            raise CheckpointError(
                f"{label} has uninitialized lazy parameters ({', '.join(lazy[:3])}{' ...' if len(lazy) > 3 else ''}): "
                "their shapes and values exist only after a first forward pass"
            )
        super().__init__(label, tensors, fmt=fmt)
