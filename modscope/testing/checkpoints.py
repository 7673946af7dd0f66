"""Assertions about saving and loading: state_dict round trips through torch.save and safetensors."""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from modscope.api.compare import check
from modscope.api.static import summary
from modscope.checkpoint import Checkpoint
from modscope.checkpoint.memory import TensorDictReader
from modscope.checkpoint.module import state_tensors
from modscope.errors import ModscopeError, UsageError
from modscope.testing._compare import fail, listing, tensor_difference, truncated, value_differences
from modscope.testing._model import run_forward

FORMATS = ("torch", "safetensors")


def assert_state_dict_roundtrip(
    model: nn.Module,
    inputs: Any = None,
    *,
    factory: Callable[[], nn.Module] | None = None,
    formats: Iterable[str] = FORMATS,
) -> None:
    """Saving ``model.state_dict()`` and loading it into a fresh model gives identical tensors (and, with
    ``inputs``, identical outputs), through ``torch.save``/``torch.load(weights_only=True)`` and through
    ``safetensors`` (tied weights stored once, as ``safetensors.torch.save_model`` does).

    The fresh model is ``factory()`` when given (the honest test: state kept outside the state_dict shows up
    as different outputs; build it on the model's device), else a deep copy of ``model`` whose parameters and
    persistent buffers are overwritten with garbage before loading.

    >>> assert_state_dict_roundtrip(model, torch.randn(1, 3, 32, 32), factory=Net)
    """
    __tracebackhide__ = True
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"formats: unknown {unknown}; choose from {list(FORMATS)}")
    report = summary(model, check_values=False)
    unready = [p.name for p in (*report.parameters, *report.buffers) if p.shape is None or p.device == "meta"]
    if unready:
        fail(f"{type(model).__name__} cannot be saved: {len(unready)} tensor(s) are lazy or on the meta device", unready)
    reference = {k: v.detach() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    expected = run_forward(model, inputs) if inputs is not None else None
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modscope-roundtrip-") as tmp:
        for fmt in formats:
            fresh = _fresh(model, factory)
            try:
                stored = _SAVERS[fmt](model, fresh, Path(tmp) / f"model.{fmt}")
            except Exception as exc:  # a format that cannot hold this state_dict is the finding
                problems.append(f"{fmt}: {type(exc).__name__}: {_one_line(exc)}")
                continue
            problems += [f"{fmt}: file {name}: {how}" for name, how in _differences(reference, stored, subset=True)]
            reloaded = {k: v for k, v in fresh.state_dict().items() if isinstance(v, torch.Tensor)}
            problems += [f"{fmt}: reloaded {name}: {how}" for name, how in _differences(reference, reloaded)]
            if expected is not None:
                problems += [f"{fmt}: {p}" for p in value_differences(expected, run_forward(fresh, inputs))]
    if problems:
        hints = [f"possible cause: {w.message}" for w in report.warnings if w.code == "unregistered_tensor"]
        shown = truncated(problems, 10) + hints
        fail(f"{type(model).__name__} does not survive a state_dict round trip", shown, limit=len(shown))


def assert_state_dict_compatible(
    model: nn.Module, checkpoint: Any, *, key: str | None = None, trust: bool = False
) -> None:
    """``model.load_state_dict(<checkpoint>, strict=True)`` would succeed: no missing or unexpected keys and no
    shape mismatches. A dry run over the checkpoint's metadata (``modscope.check``): the model is untouched
    and tensor values are not read.

    ``checkpoint``: a path in any format ``modscope.open_checkpoint`` reads, a state dict, or an nn.Module;
    ``key`` picks the state dict inside a nested checkpoint (``"state_dict"``, ``"model"``, ``"ema"``).

    >>> assert_state_dict_compatible(model, "checkpoints/release-1.0.safetensors")
    """
    __tracebackhide__ = True
    source = _checkpoint_source(checkpoint)
    try:
        report = check(model, source, key=key, trust=trust)
    except ModscopeError as exc:  # one message from the test's line, not a traceback through modscope's insides
        if isinstance(source, (str, os.PathLike)) and not os.path.lexists(source):
            raise FileNotFoundError(
                f"assert_state_dict_compatible: no checkpoint at {os.fspath(source)!r}; it checks a file that "
                "exists (the weights you published): save it there once, e.g. torch.save(model.state_dict(), path), "
                "and commit it with the tests"
            ) from None
        raise type(exc)(str(exc)) from None
    if report.ok:
        return
    counts = [
        f"{len(names)} {what}"
        for what, names in (("missing", report.missing), ("unexpected", report.unexpected),
                            ("shape mismatch(es)", report.shape_mismatches))
        if names
    ]  # fmt: skip
    where = report.checkpoint.path + (f" [{report.checkpoint.key}]" if report.checkpoint.key else "")
    lines = []
    fix = report.suggestion
    if fix is not None:
        action = " and ".join(x for x in (fix.strip and f"strip {fix.strip!r}", fix.add and f"add {fix.add!r}") if x)
        after = "then it loads cleanly" if fix.clean else "some differences remain"
        lines.append(f"suggestion: {action} in the checkpoint's keys (fixes {fix.fixes} key(s); {after})")
    if report.missing:
        lines.append(f"missing from the checkpoint ({len(report.missing)}): {listing(report.missing)}")
    if report.unexpected:
        lines.append(f"unexpected in the checkpoint ({len(report.unexpected)}): {listing(report.unexpected)}")
    for m in report.shape_mismatches:
        model_shape = "?" if m.model_shape is None else tuple(m.model_shape)
        lines.append(f"{m.key}: model {model_shape} vs checkpoint {tuple(m.checkpoint_shape)}")
    fail(f"{where} ({report.checkpoint.format}) does not load into {report.model.type}: {', '.join(counts)}", lines)


def _checkpoint_source(checkpoint: Any):
    """Paths and modules as they are; an in-memory state dict as a Checkpoint over its tensors."""
    if isinstance(checkpoint, Mapping):
        tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
        return Checkpoint(TensorDictReader("state dict", tensors, fmt="in memory"))
    return checkpoint


def _save_torch(model: nn.Module, fresh: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    torch.save(model.state_dict(), path)
    stored = torch.load(path, map_location="cpu", weights_only=True)
    fresh.load_state_dict(stored, strict=True)
    return stored


def _save_safetensors(model: nn.Module, fresh: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, load_model, save_model

    save_model(model, str(path))  # drops the second and later names of a shared tensor
    load_model(fresh, str(path), strict=True)  # and expects the fresh model to share it the same way
    return load_file(str(path))


_SAVERS = {"torch": _save_torch, "safetensors": _save_safetensors}


def _fresh(model: nn.Module, factory: Callable[[], nn.Module] | None) -> nn.Module:
    if factory is not None:
        return factory()
    try:
        fresh = copy.deepcopy(model)
    except Exception as exc:
        raise UsageError(f"cannot deep-copy {type(model).__name__} ({exc}); pass factory= to build a fresh one")
    seen: set[int] = set()
    with torch.no_grad():
        for tensor in state_tensors(fresh).values():
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if tensor.is_floating_point() or tensor.is_complex():
                tensor.fill_(float("nan"))
            elif tensor.dtype == torch.bool:
                tensor.logical_not_()
            else:
                tensor.add_(1)
    return fresh


def _differences(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], *, subset: bool = False):
    """(name, how) where ``other`` differs from ``reference``; ``subset``: ``other`` may leave names out."""
    if not subset:
        for name in reference:
            if name not in other:
                yield name, "missing"
    for name, tensor in other.items():
        if name not in reference:
            yield name, "not in the model's state_dict"
            continue
        how = tensor_difference(reference[name], tensor)
        if how is not None:
            yield name, how


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines())
    return text if len(text) <= limit else text[: limit - 1] + "…"
