"""Memory for inference and for one training step: parameters, buffers, gradients, optimizer state, activations.

Activations for training are *measured*: ``SavedTensors`` is a saved-tensor hook that sees every tensor
autograd keeps for backward, counting each storage once and leaving out parameters and buffers (already
counted). Everything else is arithmetic over the parameter list (``estimate_memory``).
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

from modscope.collect.forward.precisions import precision_rows
from modscope.collect.forward.structure import storage_bytes, storage_key
from modscope.collect.static.tensors import dtype_name
from modscope.core.walk import visits
from modscope.reports import TensorInfo
from modscope.reports.forward import MemoryEstimate

#: optimizer -> (state tensors per trainable parameter, what they are)
OPTIMIZERS = {
    "sgd": (1, "SGD with momentum keeps one momentum buffer per trainable parameter, in its dtype"),
    "adam": (2, "Adam keeps exp_avg and exp_avg_sq per trainable parameter, in its dtype, plus a 4-byte float32 "
                "step per parameter tensor"),
    "adamw": (2, "AdamW keeps exp_avg and exp_avg_sq per trainable parameter, in its dtype, plus a 4-byte float32 "
                 "step per parameter tensor"),
}
_STEP_BYTES = 4


class SavedTensors:
    """Bytes of the tensors autograd saves for backward, by dtype, each storage counted once.

    >>> saved = SavedTensors(model)
    >>> with saved.hooks():
    ...     model(x)
    >>> saved.by_dtype
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._own: set[int] = set()
        self._seen: dict[Any, torch.Tensor] = {}  # storage key -> tensor (kept alive so meta keys stay unique)
        self.by_dtype: Counter = Counter()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        if id(base) in self._own or id(tensor) in self._own:
            return tensor
        key = storage_key(tensor)
        if key not in self._seen:
            self._seen[key] = base
            self.by_dtype[dtype_name(tensor.dtype)] += storage_bytes(tensor)
        return tensor

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @contextlib.contextmanager
    def hooks(self) -> Iterator["SavedTensors"]:
        """Count what is saved while active; each entry starts a new count."""
        self.by_dtype.clear()
        self._own = {
            id(t)
            for v in visits(self.model)
            if v.first
            for t in (*v.module._parameters.values(), *v.module._buffers.values())
            if t is not None
        }
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield self
        finally:
            self._seen.clear()

    @property
    def total(self) -> int:
        return sum(self.by_dtype.values())


def reached_parameters(nodes: list) -> set[int]:
    """ids of the leaf tensors (parameters) that backward through ``nodes`` (``graph_release.graph_nodes`` of
    the output, which keeps the node objects: a dropped wrapper's id can come back for another node)."""
    reached: set[int] = set()
    for node in nodes:
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if variable is not None:
            reached.add(id(variable))
    return reached


def unused_parameters(model: nn.Module, reached: set[int]) -> list[str]:
    """Names of trainable parameters outside the autograd graph of one output (they would get no gradient)."""
    out, seen = [], set()
    for v in visits(model):
        if not v.first:
            continue
        for key, p in v.module._parameters.items():
            if p is None or id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if id(p) not in reached:
                out.append(f"{v.name}.{key}" if v.name else key)
    return out


def estimate_memory(
    parameters: Iterable[TensorInfo],
    buffers: Iterable[TensorInfo],
    *,
    saved: dict[str, int] | None,
    inference_activations: int,
    inference_by_dtype: dict[str, int] | None = None,
    optimizer: str = "adam",
    notes: Iterable[str] = (),
) -> MemoryEstimate:
    """Add up the categories; ``saved`` is SavedTensors.by_dtype (None when it could not be measured),
    ``inference_by_dtype`` the largest call's bytes by dtype (for the table by precision; none without it)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    copies, what = OPTIMIZERS[optimizer]
    by_dtype: dict[str, Counter] = {k: Counter() for k in ("params", "buffers", "gradients", "optimizer", "activations")}
    parameters, buffers = list(parameters), list(buffers)
    for p in parameters:
        size = p.bytes or 0
        by_dtype["params"][p.dtype] += size
        if p.requires_grad:
            by_dtype["gradients"][p.dtype] += size
            by_dtype["optimizer"][p.dtype] += copies * size
            if optimizer != "sgd":
                by_dtype["optimizer"]["float32"] += _STEP_BYTES
    for b in buffers:
        by_dtype["buffers"][b.dtype] += b.bytes or 0
    if saved is not None:
        by_dtype["activations"].update(saved)
    assumptions = (
        "gradients: one per trainable parameter, in the parameter's dtype",
        f"optimizer state: {what}",
        "training activations: tensors autograd saved for backward in one training-mode forward on these inputs, "
        "measured with saved-tensor hooks, each storage once, parameters not counted again",
        "inference activations: the largest inputs+outputs of a single module call (a lower bound of the "
        "working set; temporaries inside a module are not seen)",
        "not included: CUDA context and allocator overhead, backward temporaries, the loss, "
        "mixed-precision master weights",
        *(() if inference_by_dtype is None else (
            "by precision: floating-point bytes scaled by element size from this pass, integer tensors as measured; "
            "optimizer state in the parameters' dtype; int8 = weight-only (scales not counted), float16 "
            "activations, inference only; kernels that keep float32 statistics for half-precision inputs make "
            "the half rows slightly low",
        )),
        *notes,
    )
    return MemoryEstimate(
        params=sum(by_dtype["params"].values()),
        buffers=sum(by_dtype["buffers"].values()),
        gradients=sum(by_dtype["gradients"].values()),
        optimizer=sum(by_dtype["optimizer"].values()),
        optimizer_name=optimizer,
        activations=None if saved is None else sum(saved.values()),
        inference_activations=inference_activations,
        by_dtype={k: dict(v) for k, v in by_dtype.items() if v},
        assumptions=assumptions,
        precisions=() if inference_by_dtype is None else precision_rows(
            parameters, buffers, saved=saved, inference_activations=inference_by_dtype,
            optimizers={name: copies for name, (copies, _) in OPTIMIZERS.items()},
        ),
    )
