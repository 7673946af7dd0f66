"""Reports gathered from every rank of a distributed job: collectives, call them on every rank of ``group``.

>>> report = modscope.distributed_summary(model)      # on every rank, after building and sharding the model
>>> if report is not None:                            # the merged report exists on rank ``dst`` only
...     rich.print(report)

Each rank summarises its own model without communicating (``modscope.summary`` works on any single rank),
scans its local shards once (non-finite values, exact bit checksums), and sends a small record to ``dst``:
what it holds (bytes, devices), a digest of the model's structure, its findings, its non-finite counts and
one checksum per parameter. ``dst`` merges them: totals are GLOBAL element counts (each tensor once, never
local x world), plus a per-rank table, findings labelled with the ranks they occur on, replicas that
diverged (``replica_mismatch``) and ranks that hold a different model (``rank_mismatch``).

Without an initialised process group these work on the one process, so the same code runs anywhere.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from math import prod
from typing import Iterable

import torch
import torch.nn as nn

from modscope.collect.distributed.dtensor import process_group_state
from modscope.collect.distributed.ranks import (
    failures_text,
    rank_ranges,
    scan_local,
    structure_digest,
)
from modscope.collect.static.audit import accept, allowed_codes, nonfinite_finding
from modscope.errors import EXIT_USAGE, ModscopeError
from modscope.reports import AuditReport, Finding, Severity, SummaryReport, TensorKind

_MAX_LISTED = 5


class RankError(ModscopeError):
    """A rank failed while building its part of a gathered report; ``exit_code`` is that failure's."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def distributed_summary(
    model: nn.Module,
    *,
    group=None,
    dst: int = 0,
    target: str | None = None,
    check_values: bool = True,
) -> SummaryReport | None:
    """``modscope.summary`` merged over every rank of ``group`` (default: the whole job), on rank ``dst``.

    A collective: call it on every rank of the group. Returns the merged report on ``dst`` (a rank of
    ``group``) and None on the others. ``check_values=False`` skips the one pass over local data (non-finite
    scan and replica checksums).
    """
    from modscope.api.static import _summary

    return _gathered(
        lambda: _summary(model, target, False, force_distributed=True), group, dst, check_values
    )


def distributed_audit(
    model: nn.Module,
    *,
    group=None,
    dst: int = 0,
    expect_device: str | None = None,
    expect_dtype: torch.dtype | str | None = None,
    allow: Iterable[str] = (),
    target: str | None = None,
    check_values: bool = True,
) -> AuditReport | None:
    """``modscope.audit`` merged over every rank of ``group`` on rank ``dst`` (None elsewhere); collective."""
    from modscope.api.static import _audit

    allow = (allow,) if isinstance(allow, str) else tuple(allow or ())
    report = _gathered(
        lambda: _audit(model, expect_device, expect_dtype, allow, target, False, force_distributed=True),
        group,
        dst,
        check_values,
    )
    if report is None:
        return None
    return replace(report, findings=tuple(accept(list(report.findings), allowed_codes(allow))))


# --- one rank's part -------------------------------------------------------------------------------------


def _local_part(build, check_values: bool, world: int = 1):
    """(local report, its tensors, the record sent to dst)."""
    report, _, tensors = build()
    if check_values:
        compared = _compared(tensors, report.distributed.meshes, world)
        nonfinite, sums = scan_local(tensors, checksums=compared)
    else:
        nonfinite, sums = {}, None
    findings = report.warnings if isinstance(report, SummaryReport) else report.findings
    record = {
        "error": None,
        "info": report.distributed.this_rank,
        "digest": structure_digest(tensors),
        "params": len(tensors.parameters),
        "findings": [f for f in findings if f.code not in ("nonfinite_weights", "mask_buffer")],  # merged on dst
        "nonfinite": nonfinite,
        "checksums": sums,
        "coords": tensors.meshes.coordinates(),
    }
    return report, tensors, record


def _compared(tensors, meshes, world: int) -> set[str]:
    """Parameters another rank should hold an identical copy of: plain ones (when there are other ranks) and
    DTensors replicated over more than one rank of their mesh. Only these are checksummed."""
    if world < 2:
        return set()
    shapes = {m.id: m.shape for m in meshes}
    out = set()
    for info in tensors.parameters:
        s = info.sharding
        if s is None:
            out.add(info.name)
            continue
        copies = prod(n for n, p in zip(shapes.get(s.mesh, ()), s.placements) if p == "Replicate()")
        if copies > 1:
            out.add(info.name)
    return out


def _gathered(build, group, dst: int, check_values: bool):
    rank, world, _ = process_group_state()
    if rank is None:  # no process group: this process is the whole job
        report, tensors, record = _local_part(build, check_values)
        return _merge(report, tensors, [(0, record)], check_values)

    dist = torch.distributed
    global_dst = dist.get_global_rank(group, dst) if group is not None else dst
    me = dist.get_rank()
    report, tensors, failure = None, None, None
    try:
        report, tensors, record = _local_part(build, check_values, dist.get_world_size(group))
    except Exception as exc:  # still take part in the gather, or every other rank would wait forever
        failure = exc
        record = {"error": _describe(exc), "exit_code": getattr(exc, "exit_code", 3)}
    record["rank"] = me
    received = [None] * dist.get_world_size(group) if me == global_dst else None
    dist.gather_object(record, received, dst=global_dst, group=group)
    if me != global_dst:
        if failure is not None:
            raise failure
        return None
    errors = [r for r in received if r["error"] is not None]
    if errors:
        text = failures_text([(r["rank"], r["error"]) for r in errors], len(received))
        raise RankError(text, errors[0]["exit_code"])
    return _merge(report, tensors, [(r["rank"], r) for r in received], check_values)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ModscopeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- merging on dst --------------------------------------------------------------------------------------


def _merge(report, tensors, records: list[tuple[int, dict]], check_values: bool):
    records = sorted(records, key=lambda r: r[0])
    mine = dict(records).get(report.distributed.this_rank.rank, records[0][1])
    same = [(rank, r) for rank, r in records if r["digest"] == mine["digest"]]
    odd = [(rank, r) for rank, r in records if r["digest"] != mine["digest"]]
    all_ranks = [rank for rank, _ in records]

    findings = merge_findings([(rank, r["findings"]) for rank, r in records], all_ranks)
    if odd:
        findings.insert(0, _rank_mismatch(report, mine, odd))
    if check_values:
        findings += _nonfinite([*tensors.parameters, *tensors.buffers], same)
        findings += _replica_mismatch(tensors.parameters, same)

    distributed = replace(
        report.distributed,
        ranks=tuple(r["info"] for _, r in records),
        gathered=True,
    )
    if isinstance(report, SummaryReport):
        return replace(report, warnings=tuple(findings), distributed=distributed)
    return replace(report, findings=tuple(findings), distributed=distributed)


def merge_findings(per_rank: list[tuple[int, list[Finding]]], all_ranks: list[int]) -> list[Finding]:
    """One finding per (code, name, severity), labelled with the ranks it occurs on unless that is all of them."""
    order: list[tuple] = []
    seen: dict[tuple, dict[int, str]] = {}
    first: dict[tuple, Finding] = {}
    for rank, findings in per_rank:
        for f in findings:
            key = (f.code, f.name, f.severity)
            if key not in seen:
                order.append(key)
                seen[key] = {}
                first[key] = f
            seen[key].setdefault(rank, f.message)
    out = []
    everyone = set(all_ranks)
    for key in order:
        by_rank = seen[key]
        f = first[key]
        messages = set(by_rank.values())
        where = "" if set(by_rank) == everyone else f"on rank(s) {rank_ranges(by_rank)}"
        if len(messages) > 1:
            lowest = min(by_rank)
            where = (where or f"on all {len(everyone)} ranks") + f"; rank {lowest}'s message shown"
            f = replace(f, message=by_rank[lowest])
        out.append(replace(f, message=f"{f.message} [{where}]") if where else f)
    return out


def _rank_mismatch(report, mine: dict, odd: list[tuple[int, dict]]) -> Finding:
    counts = sorted({r["params"] for _, r in odd})
    base = report.distributed.this_rank.rank
    return Finding(
        "rank_mismatch",
        "",
        f"rank(s) {rank_ranges(rank for rank, _ in odd)} hold a different model than rank {base} "
        f"({', '.join(map(str, counts))} parameter tensors vs {mine['params']}, or different names, shapes, dtypes "
        f"or placements): this report shows rank {base}'s model, and values are compared only between ranks "
        "that agree",
        Severity.ERROR,
    )


def _replica_keys(infos, records: list[tuple[int, dict]]):
    """For each tensor, rank -> the key of its replica group (ranks with equal keys must hold equal values).

    A DTensor's key is its rank's coordinate on the mesh dimensions that are not Replicate(); a plain tensor
    has one group (every rank holds the whole thing). Ranks outside a DTensor's mesh have no key.
    """
    keys = []
    for info in infos:
        per_rank = {}
        s = info.sharding
        for rank, r in records:
            if s is None:
                per_rank[rank] = ()
                continue
            coord = r["coords"].get(s.mesh)
            if coord is not None:
                per_rank[rank] = tuple(c for c, p in zip(coord, s.placements) if p != "Replicate()")
        keys.append(per_rank)
    return keys


def _nonfinite(infos, records: list[tuple[int, dict]]) -> list[Finding]:
    """Non-finite values summed over distinct shards (replicas counted once), with the ranks holding them."""
    out = []
    keys = _replica_keys(infos, records)
    for info, per_rank in zip(infos, keys):
        hits = {rank: r["nonfinite"][info.name] for rank, r in records if info.name in r["nonfinite"]}
        if not hits:
            continue
        worst: dict[tuple, tuple[int, int, int]] = {}
        for rank, (nan, inf, _, negative) in hits.items():
            key = per_rank.get(rank, ("rank", rank))
            old = worst.get(key, (0, 0, 0))
            worst[key] = (max(old[0], nan), max(old[1], inf), max(old[2], negative))
        nan, inf, negative = (sum(v[i] for v in worst.values()) for i in range(3))
        finding = nonfinite_finding(
            info.name, nan, inf, negative, info.numel, buffer=info.kind is TensorKind.BUFFER,
            where=f" (in the copies on rank(s) {rank_ranges(hits)})",
        )
        if finding is not None:
            out.append(finding)
    return out


def _replica_mismatch(params, records: list[tuple[int, dict]]) -> list[Finding]:
    """Parameters whose copies differ between ranks that should hold identical values."""
    if len(records) < 2 or any(r["checksums"] is None for _, r in records):
        return []
    declared: list[tuple[str, str]] = []  # DTensor replicas: an error
    plain: list[tuple[str, str]] = []  # plain tensors: replicated by convention (DDP) or meant to differ
    for index, (info, per_rank) in enumerate(zip(params, _replica_keys(params, records))):
        groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
        for rank, r in records:
            value = r["checksums"][index]
            if value is not None and rank in per_rank:
                groups[per_rank[rank]][value].append(rank)
        split = [by_value for by_value in groups.values() if len(by_value) > 1]
        if not split:
            continue
        parts = sorted(split[0].values(), key=len, reverse=True)
        detail = " vs ".join(f"rank(s) {rank_ranges(ranks)}" for ranks in parts[:3])
        (plain if info.sharding is None else declared).append((info.name, detail))
    out = []
    if declared:
        out.append(
            Finding(
                "replica_mismatch",
                declared[0][0],
                f"{len(declared)} DTensor parameter(s) differ between ranks that hold replicas of the same shard: "
                f"{_listing(declared)}",
                Severity.ERROR,
            )
        )
    if plain:
        out.append(
            Finding(
                "replica_mismatch",
                plain[0][0],
                f"{len(plain)} plain (non-DTensor) parameter(s) differ between ranks (a replica diverged, unless "
                f"they are meant to be rank-local): {_listing(plain)}",
            )
        )
    return out


def _listing(pairs: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} ({detail})" for name, detail in pairs[:_MAX_LISTED])
    return shown + (f" and {len(pairs) - _MAX_LISTED} more" if len(pairs) > _MAX_LISTED else "")
