"""A scalar to differentiate, made from whatever a model returned: ``sum``, ``mean`` or ``cross-entropy``.

Used by the analyses that need a backward pass (grads, nan, time --backward). Outputs may be a tensor or any
nesting of tuples, lists and dicts (HuggingFace-style ``ModelOutput`` included); ``sum``/``mean`` add up every
floating tensor in it, ``cross-entropy`` takes the first one as logits of shape (N, C) or (N, C, d1, ...).
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from modscope.errors import UsageError

_TARGET_SEED = 1


class LossKind(str, Enum):
    SUM = "sum"
    MEAN = "mean"
    CROSS_ENTROPY = "cross-entropy"


def floating_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside ``value`` (tensors, tuples, lists, dicts), in order."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.is_floating_point():
                yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))


def loss_kind(value: LossKind | str) -> LossKind:
    try:
        return LossKind(value)
    except ValueError:
        raise UsageError(f"loss {value!r}: expected one of {', '.join(k.value for k in LossKind)}") from None


def make_loss(
    output: Any, kind: LossKind | str, target: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The scalar loss for ``output``, or None when nothing in it can carry a gradient.

    ``target`` (cross-entropy only) holds class indices shaped like the logits without the class dimension;
    when omitted, random classes are drawn from a fixed seed.
    """
    kind = loss_kind(kind)
    tensors = [t for t in floating_tensors(output) if t.requires_grad]
    if not tensors:
        return None
    if kind is LossKind.SUM:
        return torch.stack([t.float().sum() for t in tensors]).sum()
    if kind is LossKind.MEAN:
        return torch.stack([t.float().mean() for t in tensors]).sum()
    logits = tensors[0]
    if logits.dim() < 2:
        raise UsageError(
            f"--loss cross-entropy needs logits shaped (N, C, ...); the model returned shape {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if target is None:
        generator = torch.Generator().manual_seed(_TARGET_SEED)
        target = torch.randint(0, logits.shape[1], expected, generator=generator)
    if tuple(target.shape) != tuple(expected):
        raise UsageError(
            f"--target has shape {tuple(target.shape)}, but logits of shape {tuple(logits.shape)} need "
            f"class indices of shape {expected}"
        )
    if target.is_floating_point():
        raise UsageError("--target must hold integer class indices, e.g. 8:int64[0,10)")
    classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise UsageError(f"--target class indices must lie in [0,{classes}) for {classes} classes")
    return F.cross_entropy(logits.float(), target.to(device=logits.device, dtype=torch.long))
