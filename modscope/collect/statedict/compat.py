"""A dry run of ``model.load_state_dict(checkpoint, strict=True)`` from checkpoint metadata alone.

The rules are ``nn.Module._load_from_state_dict``'s, applied without touching the model and without
recursion: the model's expected keys come from ``visits`` (every name a submodule is reachable under),
and each checkpoint key is walked down the module tree the way ``load`` hands it to submodules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.parameter import is_lazy

from modscope.collect.statedict.checkpoint import checkpoint_ref
from modscope.collect.statedict.renames import match_prefixes
from modscope.collect.static.tensors import dtype_name
from modscope.core.walk import join, visits
from modscope.reports import ModelRef
from modscope.reports.checkpoint import CompatReport, DtypeCast, PrefixFix, ShapeMismatch

_EXTRA = "_extra_state"


def check_compat(model: nn.Module, ckpt, *, target: str | None = None, tied: dict[str, str] | None = None) -> CompatReport:
    """What ``model.load_state_dict(ckpt, strict=True)`` would report, and what it would silently do.

    ``tied`` (target -> source) names keys the loader fills from another key (Hugging Face's tied weights):
    such a key is not missing when its source is in the checkpoint.

    >>> with open_checkpoint("ddp.pt") as ckpt:
    ...     check_compat(model, ckpt).suggestion      # PrefixFix(strip='module.', add='', ...)
    """
    entries = ckpt.entries()
    versions = ckpt.metadata() or {}
    visited = visits(model)
    modules = {v.name: v.module for v in visited}
    expected: dict[str, torch.Tensor] = {}
    extra_state: set[str] = set()
    non_persistent: list[str] = []
    for visit in visited:
        module = visit.module
        for key, tensor in _local_state(module).items():
            expected[join(visit.name, key)] = tensor
        non_persistent += [join(visit.name, k) for k in module._non_persistent_buffers_set if k in module._buffers]
        if type(module).set_extra_state is not nn.Module.set_extra_state:
            extra_state.add(join(visit.name, _EXTRA))

    fillable = {k for k in expected if _filled_by_module(k, modules, versions)}
    tied = dict(tied or {})
    missing, unexpected, ignored = _key_problems(model, entries, expected, extra_state, fillable, tied)

    mismatches, casts = [], []
    for key, tensor in expected.items():
        meta = entries.get(key)
        if meta is None or is_lazy(tensor):
            continue
        shape = meta.shape
        if tensor.dim() == 0 and shape == (1,):
            shape = ()  # torch loads a 1-element vector into a scalar (pre-0.4 checkpoints)
        if tuple(tensor.shape) != shape:
            mismatches.append(ShapeMismatch(key, tuple(tensor.shape), meta.shape))
        elif meta.dtype != tensor.dtype:
            lossy = torch.promote_types(meta.dtype, tensor.dtype) != tensor.dtype
            casts.append(DtypeCast(key, dtype_name(meta.dtype), dtype_name(tensor.dtype), lossy))

    notes = [
        f"{name or '(root)'} ({type(module).__name__}) overrides _load_from_state_dict or has load hooks: "
        "its own loading rules may differ from this dry run"
        for name, module in modules.items()
        if _custom_loading(module)
    ]
    notes += [
        f"{k} expects extra state; a non-tensor value under this key cannot be seen here"
        for k in sorted(extra_state)
        if k not in entries
    ]
    return CompatReport(
        model=ModelRef(type(model).__name__, target),
        checkpoint=checkpoint_ref(ckpt),
        matched=sum(1 for k in expected if k in entries),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        shape_mismatches=tuple(mismatches),
        dtype_casts=tuple(casts),
        non_persistent_buffers=tuple(non_persistent),
        ignored=tuple(ignored),
        suggestion=_suggest(model, entries, expected, extra_state, fillable, unexpected, tied),
        notes=tuple(notes),
    )


def _local_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What ``_load_from_state_dict`` loads into ``module`` itself: parameters and persistent buffers."""
    out = {k: v for k, v in module._parameters.items() if v is not None}
    out.update(
        (k, v) for k, v in module._buffers.items() if v is not None and k not in module._non_persistent_buffers_set
    )
    return out


def _key_problems(model, keys, expected, extra_state, fillable, tied) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, ignored) for a checkpoint holding ``keys``."""
    missing = [k for k in expected if k not in keys and k not in fillable and tied.get(k) not in keys]
    unexpected, ignored = [], []
    for key in keys:
        if key not in expected and key not in extra_state:
            (unexpected if _is_unexpected(key, model) else ignored).append(key)
    return missing, unexpected, ignored


def _is_unexpected(key: str, root: nn.Module) -> bool:
    """Follow ``key`` down the submodules that ``load_state_dict`` would hand it to."""
    module, rest = root, key
    while True:
        head, dot, tail = rest.partition(".")
        if not dot:
            return head not in _local_state(module)
        if head not in module._modules:
            return True
        child = module._modules[head]
        if child is None:
            return False  # a submodule set to None: load_state_dict skips its keys silently
        module, rest = child, tail


def _filled_by_module(key: str, modules: dict[str, nn.Module], versions: dict) -> bool:
    """BatchNorm fills a missing ``num_batches_tracked`` when the checkpoint predates it (version < 2 or unknown)."""
    owner, _, name = key.rpartition(".")
    module = modules.get(owner)
    if name != "num_batches_tracked" or not isinstance(module, _NormBase) or not module.track_running_stats:
        return False
    version = (versions.get(owner) or {}).get("version")
    return version is None or version < 2


def _custom_loading(module: nn.Module) -> bool:
    cls = type(module)
    overridden = cls._load_from_state_dict is not nn.Module._load_from_state_dict and not isinstance(module, _NormBase)
    return overridden or bool(module._load_state_dict_pre_hooks) or bool(module._load_state_dict_post_hooks)


def _suggest(model, entries, expected, extra_state, fillable, unexpected, tied) -> PrefixFix | None:
    """The prefix rename of checkpoint keys that explains the most unexpected keys as expected ones."""
    absent = [k for k in expected if k not in entries and k not in tied]
    if not absent or not unexpected:
        return None
    _, moves = match_prefixes(
        unexpected,
        absent,
        same=lambda c, m: is_lazy(expected[m]) or tuple(entries[c].shape) == tuple(expected[m].shape),
    )
    if not moves:
        return None
    best = moves[0]
    renamed = [
        best.b_prefix + k[len(best.a_prefix) :] if k.startswith(best.a_prefix) else k for k in entries
    ]
    missing, still_unexpected, _ = _key_problems(model, set(renamed), expected, extra_state, fillable, tied)
    return PrefixFix(best.a_prefix, best.b_prefix, best.count, not missing and not still_unexpected)
