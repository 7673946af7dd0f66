"""Checkpoint analyses as one call each: what a checkpoint holds, how two differ, whether one loads into a model.

Sources are paths (any format ``modscope.open_checkpoint`` reads), model TARGET specs, nn.Modules or
already-open ``Checkpoint`` objects.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import torch.nn as nn

from modscope.checkpoint import Checkpoint, open_checkpoint
from modscope.collect.statedict.checkpoint import summarize_checkpoint
from modscope.collect.statedict.compat import check_compat
from modscope.collect.statedict.diff import diff_checkpoints
from modscope.reports.checkpoint import CheckpointSummary, CompatReport
from modscope.reports.diff import StateDictDiff


def inspect_checkpoint(source, *, key: str | None = None, trust: bool = False) -> CheckpointSummary:
    """Counts, bytes per dtype, the name-prefix tree and tied tensors, from headers/metadata only.

    >>> modscope.inspect_checkpoint("model.safetensors").totals.numel
    """
    with _opened(source, key, trust) as ckpt:
        return summarize_checkpoint(ckpt)


def diff(
    a,
    b,
    *,
    key: str | None = None,
    key_a: str | None = None,
    key_b: str | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    keys_only: bool = False,
    trust: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> StateDictDiff:
    """Compare two state dicts tensor by tensor in bounded memory (``keys_only``: metadata alone).

    >>> d = modscope.diff("run1/last.ckpt", "run2/model.safetensors", atol=1e-6)
    >>> d.identical, [c.key for c in d.value_changed]
    """
    with _opened(a, key_a or key, trust) as left, _opened(b, key_b or key, trust) as right:
        return diff_checkpoints(left, right, rtol=rtol, atol=atol, keys_only=keys_only, progress=progress)


def check(
    model: nn.Module | str,
    weights,
    *,
    key: str | None = None,
    trust: bool = False,
    target: str | None = None,
    kwargs: dict | None = None,
) -> CompatReport:
    """Would ``model.load_state_dict(weights, strict=True)`` work? A dry run that leaves ``model`` untouched.

    ``model`` may be a TARGET spec (``"file.py:Net"``, constructor ``kwargs``); it is then built on the meta
    device when its constructor allows, so checking a huge model costs no memory.

    >>> report = modscope.check(model, "ddp_run.pt")
    >>> report.ok, report.missing, report.suggestion
    """
    if isinstance(model, str):
        target, model = model, _build_for_check(model, trust, kwargs)
    with _opened(weights, key, trust) as ckpt:
        from modscope.load.hub_keys import adapt

        view, ties, notes = adapt(model, ckpt)  # Hugging Face conventions; nothing for other models
        report = check_compat(model, view, target=target, tied=ties)
    return dataclasses.replace(report, notes=notes + report.notes) if notes else report


def _build_for_check(target: str, trust: bool, kwargs: dict | None) -> nn.Module:
    """Shapes and dtypes are all a dry run needs: build on the meta device (no memory), else normally."""
    from modscope.errors import LoadError
    from modscope.load.hub import is_hub_target
    from modscope.load.target import is_object_spec, load_model

    if is_object_spec(target) or is_hub_target(target):
        try:
            return load_model(target, kwargs=kwargs, trust=trust, device="meta")
        except LoadError:
            pass  # some constructors need real tensors; the second attempt reports its own error
    return load_model(target, kwargs=kwargs, trust=trust)


@contextlib.contextmanager
def _opened(source, key: str | None, trust: bool):
    """An open Checkpoint for ``source``; closed afterwards unless the caller passed it in open."""
    if isinstance(source, Checkpoint):
        yield source
        return
    with open_checkpoint(source, key=key, trust=trust) as ckpt:
        yield ckpt
