"""Static inspection: compose the collectors into SummaryReport and AuditReport (the forward pass, when
inputs are given, is composed in modscope.api.forward)."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable

import torch
import torch.nn as nn

from modscope.collect.distributed.ranks import distributed_findings, distributed_info, has_dtensors
from modscope.collect.static.audit import accept, allowed_codes, audit_findings
from modscope.collect.static.hazards import find_hazards
from modscope.collect.static.tensors import collect_tensors
from modscope.collect.static.tree import collect_modules
from modscope.core.walk import visits
from modscope.errors import ForwardError, UsageError
from modscope.load.inputs import parse_dtype
from modscope.reports import AuditReport, ModelRef, SummaryReport, Totals


def summary(
    model: nn.Module,
    *,
    inputs=None,
    device: str | None = None,
    train_mode: bool = False,
    flops: bool = True,
    memory: bool = True,
    optimizer: str = "adam",
    target: str | None = None,
    check_values: bool = True,
) -> SummaryReport:
    """Parameters vs buffers, module tree, sharing and hazards of ``model``; with ``inputs`` (a tensor, tuple,
    dict or ModelInputs) also one forward pass: shapes, calls, FLOPs and a memory estimate (``report.forward``).

    ``device``: run the pass on cpu/cuda (moved back after) or on a data-free "meta" copy. A failing forward
    raises ForwardError whose ``partial`` is this report with what was recorded before the failure.

    ``check_values=False`` skips the NaN/Inf scan of the weights (the only step that reads tensor data).

    >>> report = modscope.summary(torchvision.models.resnet18())
    >>> report.totals.params
    11689512
    >>> modscope.summary(model, inputs=torch.randn(1, 3, 224, 224)).forward.flops_total
    """
    static, visited, tensors = _summary(model, target, check_values)
    if inputs is None:
        return static
    from modscope.api.forward import analyse_forward

    shapes: dict = {}
    try:
        forward = analyse_forward(
            model, inputs, parameters=static.parameters, buffers=static.buffers, device=device,
            train_mode=train_mode, flops=flops, memory=memory, optimizer=optimizer, materialized=shapes,
        )
    except ForwardError as exc:
        exc.partial = replace(_materialized(static, visited, tensors, shapes), forward=exc.partial)
        raise
    return replace(_materialized(static, visited, tensors, shapes), forward=forward)


def _materialized(static: SummaryReport, visited, tensors, shapes: dict) -> SummaryReport:
    """The summary counted with the shapes a forward pass gave the lazy tensors (``shapes``: name -> (shape,
    dtype)); the model itself stays lazy, and each lazy tensor's finding says so."""
    if not shapes:
        return static
    from modscope.collect.forward.materialized import with_shapes

    counted = replace(
        tensors, parameters=list(with_shapes(tensors.parameters, shapes)), buffers=list(with_shapes(tensors.buffers, shapes))
    )
    modules, _ = collect_modules(visited, counted)
    warnings = tuple(
        replace(
            w,
            message=f"{w.name} is an uninitialized lazy tensor; the forward pass materialised it as "
            f"{tuple(shapes[w.name][0])} ({shapes[w.name][1]}), counted in this report; the model itself is left "
            "uninitialized",
        )
        if w.code == "uninitialized_parameter" and w.name in shapes else w
        for w in static.warnings
    )
    return replace(
        static,
        totals=_totals(counted, len(modules)),
        parameters=tuple(counted.parameters),
        buffers=tuple(counted.buffers),
        modules=tuple(modules),
        warnings=warnings,
    )


def _summary(model, target, check_values, force_distributed=False):
    """(SummaryReport, visits, CollectedTensors): the parts ``modscope.api.distributed`` reuses."""
    _require_module(model)
    visited = visits(model)
    tensors = collect_tensors(visited)
    modules, shared_modules = collect_modules(visited, tensors)
    _, _, audit = audit_findings(visited, tensors, check_values=check_values)
    distributed, sharding = _distributed(visited, tensors, force_distributed)
    warnings = find_hazards(visited, tensors) + audit + sharding
    report = SummaryReport(
        model=ModelRef(type(model).__name__, target),
        totals=_totals(tensors, len(modules)),
        parameters=tuple(tensors.parameters),
        buffers=tuple(tensors.buffers),
        modules=tuple(modules),
        shared=tuple(tensors.shared + shared_modules),
        warnings=tuple(warnings),
        distributed=distributed,
    )
    return report, visited, tensors


def audit(
    model: nn.Module,
    *,
    expect_device: str | None = None,
    expect_dtype: torch.dtype | str | None = None,
    allow: Iterable[str] = (),
    target: str | None = None,
) -> AuditReport:
    """Mixed devices/dtypes, misplaced buffers, mixed train/eval modes and non-finite weights.

    ``allow``: finding codes to accept (listed as info, ``ok`` stays True), and with ``expect_dtype`` also
    tensor-name/module-type substrings exempt from it; any other value raises UsageError.

    >>> modscope.audit(model, expect_dtype="bfloat16", allow={"norm"}).ok
    >>> modscope.audit(model, allow={"mixed_training_mode"}).ok
    """
    return _audit(model, expect_device, expect_dtype, allow, target)[0]


def _audit(model, expect_device, expect_dtype, allow, target, check_values=True, force_distributed=False):
    """(AuditReport, visits, CollectedTensors)."""
    _require_module(model)
    allow = (allow,) if isinstance(allow, str) else tuple(allow or ())
    if isinstance(expect_dtype, str):
        expect_dtype = parse_dtype(expect_dtype)
    if expect_device is not None:
        try:
            torch.device(expect_device)
        except RuntimeError:
            raise UsageError(f"--expect-device: {expect_device!r} is not a device (try cpu, cuda, cuda:1, meta)")
    visited = visits(model)
    tensors = collect_tensors(visited)
    devices, dtypes, findings = audit_findings(
        visited, tensors, expect_device=expect_device, expect_dtype=expect_dtype, allow=allow,
        check_values=check_values,
    )
    distributed, sharding = _distributed(visited, tensors, force_distributed)
    sharding = accept(sharding, allowed_codes(allow))
    report = AuditReport(
        ModelRef(type(model).__name__, target), devices, dtypes, tuple(findings + sharding), distributed
    )
    return report, visited, tensors


def _totals(tensors, module_count: int) -> Totals:
    params = sum(p.numel or 0 for p in tensors.parameters)
    trainable = sum(p.numel or 0 for p in tensors.parameters if p.requires_grad)
    by_dtype = Counter()
    for info in (*tensors.parameters, *tensors.buffers):
        by_dtype[info.dtype] += info.bytes or 0
    return Totals(
        params=params,
        trainable_params=trainable,
        frozen_params=params - trainable,
        param_bytes=sum(p.bytes or 0 for p in tensors.parameters),
        buffers=sum(b.numel or 0 for b in tensors.buffers),
        buffer_bytes=sum(b.bytes or 0 for b in tensors.buffers),
        modules=module_count,
        uninitialized_params=sum(1 for p in tensors.parameters if not p.initialized),
        bytes_by_dtype=dict(by_dtype),
    )


def _distributed(visited, tensors, force: bool = False):
    """(DistributedInfo, its findings) for a model holding DTensors (or when ``force``); else (None, [])."""
    if not (force or has_dtensors(tensors)):
        return None, []
    info = distributed_info(visited, tensors)
    return info, distributed_findings(tensors, info)


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}")
