"""A forward pass that failed because of the input it was given, explained in the input's own terms.

torch says ``Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int``
when a float ``--input`` reaches an ``nn.Embedding``; modscope says which embedding, how many ids it takes,
and the ``--input`` form that makes them. Everything is read from the exception's own traceback (the
embedding whose forward raised, and the tensor it was given); nothing is run again.

>>> explain(exc, model)   # "RuntimeError: nn.Embedding 'tok' takes integer ids in [0,1000) but got float32 1x16: give ..."
"""
from __future__ import annotations

import torch
import torch.nn as nn

from modscope.core.walk import visits

_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def explain(exc: BaseException, model: nn.Module | None = None) -> str:
    """``Type: message`` for an exception a forward raised, or what to give instead when the input caused it."""
    return f"{type(exc).__name__}: {input_hint(exc, model) or exc}"


def input_hint(exc: BaseException, model: nn.Module | None = None) -> str | None:
    """What to pass instead, when ``exc`` is an embedding refusing its input (float values, ids out of range)."""
    if not isinstance(exc, (RuntimeError, IndexError, TypeError)):
        return None
    found = _embedding_call(exc)
    text = str(exc)
    if found is None:
        if "embedding" not in text or model is None:
            return None
        first = next((v.module for v in visits(model) if isinstance(v.module, _EMBEDDINGS)), None)
        if first is None:
            return None
        found = (first, None)
    embedding, ids = found
    size = embedding.num_embeddings
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            problem = f"got {str(ids.dtype).removeprefix('torch.')} input {_shape(ids, 'x')}"
        elif "index out of range" in text and ids.numel() and ids.device.type != "meta":
            problem = f"got ids in [{int(ids.min())},{int(ids.max())}]"
        else:
            return None
        shape = _shape(ids, ",")
    elif "indices" in text or "index out of range" in text:
        problem, shape = "got something else", "SHAPE"
    else:
        return None
    name = _name_in(model, embedding)
    return (
        f"nn.{type(embedding).__name__} {name}takes integer ids in [0,{size}) but {problem}: "
        f"give --input {shape}:int64[0,{size})"
    )


def _embedding_call(exc: BaseException) -> tuple[nn.Module, object] | None:
    """(the innermost embedding whose forward was running when ``exc`` was raised, the input it was given)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        module = local.get("self")
        if isinstance(module, _EMBEDDINGS):
            found = (module, local.get("input"))
        tb = tb.tb_next
    return found


def _name_in(model: nn.Module | None, module: nn.Module) -> str:
    if model is None:
        return ""
    name = next((v.name for v in visits(model) if v.module is module), None)
    return f"{name!r} " if name else ""


def _shape(tensor: torch.Tensor, sep: str) -> str:
    return sep.join(map(str, tensor.shape)) or "1"
