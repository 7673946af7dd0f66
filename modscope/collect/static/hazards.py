"""Static hazards: plain tensors hidden in attributes, uninitialized lazy tensors, tensors on ``meta``."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.static.tensors import CollectedTensors
from modscope.core.walk import Visit, join
from modscope.report import Finding

# nn.Module's own bookkeeping attributes (_parameters, _buffers, _modules, hook tables, ...)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def find_hazards(visited: list[Visit], tensors: CollectedTensors) -> list[Finding]:
    findings = list(_unregistered_tensors(visited))
    meta: list[str] = []
    for name, tensor in tensors.objects.items():
        if is_lazy(tensor):
            findings.append(
                Finding(
                    "uninitialized_parameter",
                    name,
                    f"{name} is an uninitialized lazy tensor: its shape is known only after the first forward "
                    "pass (run one, or pass --input)",
                )
            )
        elif tensor.is_meta:
            meta.append(name)
    if meta:  # one finding: a model built on meta has thousands of such tensors
        listed = ", ".join(meta[:5]) + (f" and {len(meta) - 5} more" if len(meta) > 5 else "")
        what = f"{meta[0]} is" if len(meta) == 1 else f"{len(meta)} tensors are"
        findings.append(Finding("meta_tensor", meta[0], f"{what} on the meta device (shapes, no data): {listed}"))
    return findings


def _unregistered_tensors(visited: list[Visit]):
    """Tensors stored as plain attributes: they do not follow ``.to()`` and are missing from state_dict."""
    for visit in visited:
        if not visit.first:
            continue
        for label, tensor in plain_attributes(visit.module):
            name = join(visit.name, label)
            yield Finding(
                "unregistered_tensor",
                name,
                f"{name} is a plain {type(tensor).__name__} attribute {tuple(tensor.shape)} on {tensor.device}, "
                "not a registered parameter/buffer: .to() will not move it, state_dict will not save it and "
                "optimizers will not see it (use register_buffer, nn.Parameter or ParameterList/ParameterDict)",
            )


def plain_attributes(module: nn.Module):
    """(label, tensor) for every tensor in the module's own attributes, nn.Module's bookkeeping left out."""
    for attr, value in vars(module).items():
        if attr not in _MODULE_INTERNALS:
            yield from plain_tensors(attr, value)


def plain_tensors(attr: str, value):
    """Tensors (Parameters too: a Python list of Parameters is invisible to optimizers) in an attribute."""
    if isinstance(value, torch.Tensor):
        yield attr, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, torch.Tensor):
                yield f"{attr}[{i}]", item
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, torch.Tensor):
                yield f"{attr}[{key!r}]", item
