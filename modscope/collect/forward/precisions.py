"""The memory estimate re-priced for other precisions: what the same model needs stored in float32, bfloat16,
float16, or with int8 weights, at the same inputs (batch, sequence length, image size).

Arithmetic over what the pass measured, by dtype: every floating-point byte (parameters, buffers, gradients,
optimizer state, saved and inference activations) is scaled by element size to the precision's dtype;
integer and bool tensors (token ids, pooling indices, step counters) are kept as measured. ``int8`` means
weight-only quantised parameters (one byte each, quantisation scales not counted) with float16 buffers and
activations, for inference only.
"""
from __future__ import annotations

from typing import Iterable

import torch

from modscope.reports import TensorInfo
from modscope.reports.forward import PrecisionRow

#: (precision, the dtype parameters take, the dtype buffers, gradients and activations take)
PRECISIONS = (
    ("float32", "float32", "float32"),
    ("bfloat16", "bfloat16", "bfloat16"),
    ("float16", "float16", "float16"),
    ("int8", "int8", "float16"),
)
TRAINABLE = {"float32", "bfloat16", "float16"}
STEP_BYTES = 4  # Adam/AdamW keep a float32 step per parameter tensor


def precision_rows(
    parameters: Iterable[TensorInfo],
    buffers: Iterable[TensorInfo],
    *,
    saved: dict[str, int] | None,
    inference_activations: dict[str, int],
    optimizers: dict[str, int],
) -> tuple[PrecisionRow, ...]:
    """One row per precision; ``saved``/``inference_activations`` are bytes by dtype as measured (``saved`` None:
    not measured, so no training figures); ``optimizers`` maps a name to its state copies per parameter."""
    parameters, buffers = list(parameters), list(buffers)
    trainable = [p for p in parameters if p.requires_grad]
    rows = []
    for precision, weight_dtype, compute_dtype in PRECISIONS:
        weights = _bytes(parameters, weight_dtype) + _bytes(buffers, compute_dtype)
        inference = weights + _scaled(inference_activations, compute_dtype)
        training: dict[str, int | None] = {}
        for name, copies in optimizers.items():
            if saved is None or precision not in TRAINABLE:
                training[name] = None
                continue
            grads = _bytes(trainable, weight_dtype)
            steps = STEP_BYTES * len(trainable) if copies == 2 else 0
            training[name] = weights + grads + copies * grads + steps + _scaled(saved, compute_dtype)
        rows.append(PrecisionRow(precision, compute_dtype, weights, inference, training))
    return tuple(rows)


def _bytes(tensors: list[TensorInfo], dtype: str) -> int:
    """Scaled once per dtype (a tensor's bytes are a multiple of its element size, so the sum is exact)."""
    by_dtype: dict[str, int] = {}
    for t in tensors:
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + (t.bytes or 0)
    return _scaled(by_dtype, dtype)


def _scaled(by_dtype: dict[str, int], target: str) -> int:
    size = getattr(torch, target).itemsize
    total = 0
    for name, nbytes in by_dtype.items():
        dtype = getattr(torch, name, None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            total += nbytes * size // dtype.itemsize
        else:
            total += nbytes
    return total
