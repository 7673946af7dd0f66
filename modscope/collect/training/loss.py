"""A scalar to differentiate, made from whatever a model returned: ``sum``, ``mean``, ``cross-entropy``, or a
function of the output (``loss=lambda out: F.cross_entropy(out, labels)``).

Used by the analyses that need a backward pass (grads, nan, time --backward). Outputs may be a tensor or any
nesting of tuples, lists and dicts (HuggingFace-style ``ModelOutput`` included); ``sum``/``mean`` add up every
floating tensor in it, ``cross-entropy`` takes the first one as logits of shape (N, C) or (N, C, d1, ...).
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Iterator, Union

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


LossFn = Callable[[Any], torch.Tensor]  # the model's output -> a scalar tensor
Loss = Union[LossKind, str, LossFn]


def loss_kind(value: Loss) -> LossKind | LossFn:
    """A LossKind for a name; a loss function as it is."""
    if callable(value):
        return value
    try:
        return LossKind(value)
    except ValueError:
        raise UsageError(f"loss {value!r}: expected one of {', '.join(k.value for k in LossKind)}, or a function") from None


def loss_label(value: Loss) -> str:
    """How reports name the loss: 'mean', 'cross-entropy', or a loss function's name."""
    kind = loss_kind(value)
    return kind.value if isinstance(kind, LossKind) else getattr(kind, "__name__", type(kind).__name__)


def make_loss(output: Any, kind: Loss, target: torch.Tensor | None = None) -> torch.Tensor | None:
    """The scalar loss for ``output``, or None when nothing in it can carry a gradient.

    ``target`` (cross-entropy only) holds class indices shaped like the logits without the class dimension;
    when omitted, random classes are drawn from a fixed seed. A loss function gets ``output`` alone.
    """
    kind = loss_kind(kind)
    if not isinstance(kind, LossKind):
        value = kind(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UsageError(f"the loss function returned {got}; it must return a scalar tensor")
        return value.reshape(())
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
