"""Assertions about what a model holds, answered from ``modscope.summary`` / ``modscope.audit`` (no forward)."""
from __future__ import annotations

import difflib
from typing import Iterable

import torch
import torch.nn as nn

from modscope.api.static import audit, summary
from modscope.collect.static.tensors import dtype_name
from modscope.reports import SharedKind, SummaryReport
from modscope.testing._compare import fail


def assert_param_count(
    model: nn.Module, expected: int, *, trainable: bool | None = None, tolerance: int | float = 0
) -> None:
    """The model has ``expected`` parameters (``trainable=True``: trainable only; ``False``: frozen only).

    ``tolerance``: an allowed absolute difference, or a fraction of ``expected`` when a float below 1.
    Tied parameters count once.

    >>> assert_param_count(resnet18(), 11_689_512)
    >>> assert_param_count(model, 2_000_000, trainable=True, tolerance=0.01)   # within 1%
    """
    __tracebackhide__ = True
    report = summary(model, check_values=False)
    kind = {None: "", True: "trainable ", False: "frozen "}[trainable]
    lazy = [p.name for p in report.parameters if not p.initialized]
    if lazy:
        fail(
            f"{_label(model)}: cannot count {kind}parameters, {len(lazy)} lazy parameter(s) are uninitialized "
            "(run one forward pass first)",
            lazy,
        )
    totals = report.totals
    actual = {None: totals.params, True: totals.trainable_params, False: totals.frozen_params}[trainable]
    allowed = tolerance * expected if isinstance(tolerance, float) and tolerance < 1 else tolerance
    if abs(actual - expected) <= allowed:
        return
    diff = actual - expected
    pct = f" ({100 * diff / expected:+.2f}%)" if expected else ""
    within = f" ± {allowed:,.0f}" if allowed else ""
    fail(
        f"{_label(model)} has {actual:,} {kind}parameters, expected {expected:,}{within}: {diff:+,}{pct}",
        _breakdown(report, trainable, f"{kind}parameters by submodule:"),
        limit=16,
    )


def assert_no_shared_params(model: nn.Module) -> None:
    """No parameter is reachable under two names (tied) or shares memory with another tensor.

    >>> assert_no_shared_params(model)   # e.g. after untying an embedding and an output head
    """
    __tracebackhide__ = True
    report = summary(model, check_values=False)
    params = {p.name for p in report.parameters} | {a for p in report.parameters for a in p.shared_with}
    groups = [g for g in report.shared if g.kind is not SharedKind.MODULE and params.intersection(g.names)]
    if not groups:
        return
    infos = {p.name: p for p in (*report.parameters, *report.buffers)}
    lines = []
    for group in groups:
        info = infos.get(group.names[0])
        what = f"  {tuple(info.shape)} {info.dtype}, {info.numel:,} elements" if info and info.shape else ""
        how = "one tensor under several names" if group.kind is SharedKind.TIED else "distinct tensors, one storage"
        lines.append(f"{' = '.join(group.names)}  ({how}){what}")
    fail(f"{_label(model)} shares parameters in {len(groups)} place(s):", lines)


def assert_tied(model: nn.Module, *names: str) -> None:
    """All ``names`` (state_dict-style, e.g. ``"lm_head.weight"``) are one and the same tensor.

    >>> assert_tied(gpt, "transformer.wte.weight", "lm_head.weight")
    """
    __tracebackhide__ = True
    if len(names) < 2:
        raise TypeError("assert_tied needs at least two parameter or buffer names")
    report = summary(model, check_values=False)
    canonical = {}
    for info in (*report.parameters, *report.buffers):
        for name in (info.name, *info.shared_with):
            canonical[name] = info.name
    unknown = [n for n in names if n not in canonical]
    if unknown:
        fail(
            f"{_label(model)} has no parameter or buffer named {', '.join(repr(n) for n in unknown)}",
            [f"{n!r}: did you mean {', '.join(repr(m) for m in close)}?"
             for n in unknown if (close := difflib.get_close_matches(n, canonical, n=3, cutoff=0.6))],
        )
    if len({canonical[n] for n in names}) == 1:
        return
    tensors = {n: _tensor(model, n) for n in names}
    lines = [f"{n}: {type(t).__name__} {tuple(t.shape)} {dtype_name(t.dtype)}" for n, t in tensors.items()]
    first, *rest = tensors.values()
    if all(_same_storage(first, t) for t in rest):
        lines.append("they share memory but are distinct tensor objects: gradients and optimizer state are not shared")
    elif all(t.shape == first.shape and t.dtype == first.dtype and torch.equal(t.detach(), first.detach()) for t in rest):
        lines.append("their values are equal now, but they are separate copies and will drift apart in training")
    groups = len({canonical[n] for n in names})
    fail(f"{_label(model)}: {', '.join(names)} are not tied ({groups} separate tensors)", lines)


def assert_devices(model: nn.Module, device: str | torch.device) -> None:
    """Every parameter and buffer is on ``device`` (``"cuda"`` matches any ``cuda:N``).

    >>> assert_devices(model.cuda(), "cuda")
    """
    __tracebackhide__ = True
    report = audit(model, expect_device=str(device))
    wrong = [f.message for f in report.findings if f.code == "device_mismatch"]
    if wrong:
        fail(f"{_label(model)} is not entirely on {device} (elements per device: {_shares(report.devices)})", wrong)


def assert_dtypes(model: nn.Module, dtype: torch.dtype | str, *, allow: Iterable[str] = ()) -> None:
    """Every floating parameter and buffer is ``dtype``, except those whose name or module type contains one
    of the ``allow`` substrings (case-insensitive). Integer buffers (counters, indices) are not checked.

    >>> assert_dtypes(model.to(torch.bfloat16), torch.bfloat16, allow={"norm"})
    """
    __tracebackhide__ = True
    report = audit(model, expect_dtype=dtype, allow=tuple(allow))
    wrong = [f.message for f in report.findings if f.code == "dtype_mismatch"]
    if wrong:
        want = dtype if isinstance(dtype, str) else dtype_name(dtype)
        allowed = f", allowing {sorted(allow)}" if allow else ""
        fail(f"{_label(model)} is not entirely {want}{allowed} (elements per dtype: {_shares(report.dtypes)})", wrong)


def _label(model: nn.Module) -> str:
    return type(model).__name__


def _breakdown(report: SummaryReport, trainable: bool | None, title: str) -> list[str]:
    """One line per child of the root (or of the first module with several children, when the root merely
    wraps one) and one for the parent's own tensors: type and count."""

    def count(info) -> int:
        if trainable is None:
            return info.params_total
        return info.trainable_total if trainable else info.params_total - info.trainable_total

    root = report.module("")
    own = count(root) - sum(count(report.module(c)) for c in root.children)
    while len(root.children) == 1 and not own:
        root = report.module(root.children[0])
        own = count(root) - sum(count(report.module(c)) for c in root.children)
    rows = [(c, report.module(c).type, count(report.module(c))) for c in root.children]
    rows = [(f"{root.name} (own)" if root.name else "(own)", root.type, own)] + rows
    rows = [row for row in rows if row[2]]  # modules without such parameters are noise here
    if not rows:
        return []
    name_w = max(len(name) for name, _, _ in rows)
    type_w = max(len(kind) for _, kind, _ in rows)
    num_w = max(len(f"{n:,}") for _, _, n in rows)
    return [title] + [f"  {name:<{name_w}}  {kind:<{type_w}}  {n:>{num_w},}" for name, kind, n in rows]


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    return module._parameters.get(attr) if attr in module._parameters else module._buffers[attr]


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() != 0
    except (RuntimeError, NotImplementedError):
        return False


def _shares(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
