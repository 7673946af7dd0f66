"""When a meta pass fails: whether the failing module may run on real CPU tensors, and what the report says.

The cap (``FALLBACK_MAX_BYTES``, 1 GiB; ``MODSCOPE_META_FALLBACK_MAX_BYTES`` overrides it) bounds both the
module's weights and its inputs: materializing them costs that much memory.
"""
from __future__ import annotations

import os

import torch

from modscope.collect.forward.meta import FALLBACK_ENV, FALLBACK_MAX_BYTES, module_bytes
from modscope.collect.forward.run import PassResult
from modscope.core.text import human_bytes
from modscope.errors import UsageError
from modscope.reports.forward import Fallback, Record, TensorMeta


def fallback_max_bytes() -> int:
    """The fallback cap: ``MODSCOPE_META_FALLBACK_MAX_BYTES`` when set (bytes, e.g. to test a refusal on a
    small model), else ``FALLBACK_MAX_BYTES`` (1 GiB)."""
    text = os.environ.get(FALLBACK_ENV, "").strip()
    if not text:
        return FALLBACK_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{FALLBACK_ENV}={text!r}: expected a whole number of bytes, e.g. {FALLBACK_MAX_BYTES}")
    return value


def fallback_for(result: PassResult, cap: int) -> tuple[Fallback | None, str | None]:
    """(the fallback, None) to run the failing module on real CPU tensors, or (None, why not) when its weights
    or inputs are over ``cap``."""
    failure, module = result.failure, result.failing_module
    weights = module_bytes(module)
    inputs = sum(_meta_bytes(t) for t in _tensor_metas((failure.call.args, failure.call.kwargs)))
    if weights > cap or inputs > cap:
        what = f"weights are {human_bytes(weights)}" if weights > cap else f"inputs are {human_bytes(inputs)}"
        return None, (
            f"modscope did not retry it on real CPU tensors: its {what}, over the fallback cap of {human_bytes(cap)} "
            f"({FALLBACK_ENV} sets it)"
        )
    action = (
        f"ran it on CPU with random weights ({human_bytes(weights)}) and its inputs (their known values where "
        "modscope has them, random of the recorded shapes otherwise); its outputs were turned back into meta tensors"
    )
    return Fallback(failure.module, failure.type, failure_reason(failure), action), None


def failure_reason(failure) -> str:
    """The exception type and the first line of its message, for a report."""
    return f"{failure.error}: {_first_line(failure.message)}"


def inside(name: str, island: str) -> bool:
    """Is module ``name`` the module ``island`` or one of its submodules?"""
    return island == "" or name == island or name.startswith(island + ".")


def _tensor_metas(value):
    if isinstance(value, TensorMeta):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensor_metas(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensor_metas(item)
    elif isinstance(value, Record):
        yield from _tensor_metas(value.fields)


def _meta_bytes(meta: TensorMeta) -> int:
    dtype = getattr(torch, meta.dtype, None)
    return meta.numel * (dtype.itemsize if isinstance(dtype, torch.dtype) else 8)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 300 else line[:299] + "…"
