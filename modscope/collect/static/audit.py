"""Device/dtype/mode/finiteness audit over a model's parameters and buffers."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from typing import Iterable

import torch
from torch.nn.parameter import is_lazy

from modscope.collect.distributed.dtensor import is_dtensor, local_of
from modscope.collect.static.tensors import CollectedTensors, dtype_name
from modscope.core.walk import Visit
from modscope.errors import UsageError
from modscope.reports import Finding, Severity
from modscope.reports.static import FINDING_CODES

_MAX_LISTED = 5


def audit_findings(
    visited: list[Visit],
    tensors: CollectedTensors,
    *,
    expect_device: str | None = None,
    expect_dtype: torch.dtype | None = None,
    allow: Iterable[str] = (),
    check_values: bool = True,
) -> tuple[dict[str, int], dict[str, int], list[Finding]]:
    """Return (elements per device, elements per dtype, findings).

    ``allow``: finding codes to accept (reported as info, not failing), and with ``expect_dtype`` also
    name/module-type substrings exempt from it; anything else raises UsageError. ``check_values=False`` skips
    the NaN/Inf scan, the only step that reads tensor data (one pass over the weights).
    """
    codes, patterns = split_allow(allow, visited, tensors, expect_dtype is not None)
    infos = [*tensors.parameters, *tensors.buffers]
    devices = Counter()
    dtypes = Counter()
    for info in infos:
        devices[info.device] += info.numel or 0
        dtypes[info.dtype] += info.numel or 0
    findings: list[Finding] = []
    if len(devices) > 1:
        findings.append(Finding("mixed_device", "", f"tensors live on several devices: {_shares(devices)}"))
    findings += _mixed_dtype(infos)
    findings += _buffer_devices(tensors)
    findings += _mixed_modes(visited)
    if check_values:
        findings += _nonfinite(tensors)
    if expect_device is not None:
        findings += _expect_device(infos, expect_device)
    if expect_dtype is not None:
        findings += _expect_dtype(infos, expect_dtype, _module_types(visited), patterns)
    return dict(devices), dict(dtypes), accept(findings, codes)


def split_allow(
    allow: Iterable[str], visited: list[Visit], tensors: CollectedTensors, dtype_rule: bool
) -> tuple[frozenset[str], tuple[str, ...]]:
    """(finding codes, name/type substrings) in ``allow``. Without ``--expect-dtype`` a value that is not a code
    is refused; with it, a substring that matches nothing exempts nothing (one ``allow`` set can serve many
    models in a test suite, and a typo only leaves the audit stricter)."""
    allow = tuple(allow)
    codes = allowed_codes(allow)
    patterns = tuple(a for a in allow if a not in FINDING_CODES)
    valid = f"finding codes: {', '.join(FINDING_CODES)}"
    for pattern in patterns:
        if not dtype_rule:
            raise UsageError(
                f"--allow {pattern!r} is not a finding code ({valid}); a tensor-name or module-type substring "
                "applies only with --expect-dtype"
            )
    return codes, patterns


def allowed_codes(allow: Iterable[str]) -> frozenset[str]:
    """The finding codes among the ``allow`` values."""
    return frozenset(a for a in allow if a in FINDING_CODES)


def accept(findings: list[Finding], codes: Iterable[str]) -> list[Finding]:
    """Findings whose code is in ``codes`` turned into infos (still listed, no longer failing)."""
    codes = frozenset(codes)
    return [
        replace(f, severity=Severity.INFO, message=f"{f.message} (accepted: --allow {f.code})")
        if f.code in codes and f.severity is not Severity.INFO else f
        for f in findings
    ]


def _shares(counter: Counter) -> str:
    total = sum(counter.values()) or 1
    return ", ".join(f"{k} ({100 * v / total:.1f}% of elements)" for k, v in counter.most_common())


def _mixed_dtype(infos) -> list[Finding]:
    floating = [i for i in infos if _is_float(i.dtype)]
    by_dtype = Counter()
    for info in floating:
        by_dtype[info.dtype] += info.numel or 0
    if len(by_dtype) < 2:
        return []
    main = by_dtype.most_common(1)[0][0]
    islands: dict[str, list[str]] = defaultdict(list)
    for info in floating:
        if info.dtype != main:
            islands[info.dtype].append(info.name)
    return [
        Finding(
            "mixed_dtype",
            names[0],
            f"{len(names)} floating tensors are {dtype} in a mostly {main} model: {_listing(names)}",
        )
        for dtype, names in islands.items()
    ]


def _buffer_devices(tensors: CollectedTensors) -> list[Finding]:
    param_devices: dict[str, set[str]] = defaultdict(set)
    for info in tensors.parameters:
        param_devices[info.module].add(info.device)
    out = []
    for info in tensors.buffers:
        devs = param_devices.get(info.module)
        if devs and info.device not in devs and info.device != "meta":
            out.append(
                Finding(
                    "buffer_device",
                    info.name,
                    f"buffer {info.name} is on {info.device} but its module's parameters are on "
                    f"{', '.join(sorted(devs))}: forward will fail or copy every call",
                    Severity.ERROR,
                )
            )
    return out


def _mixed_modes(visited: list[Visit]) -> list[Finding]:
    root_mode = visited[0].module.training
    # report only the top-most module of each differing subtree (pre-order: descendants follow their top)
    tops: list[str] = []
    for v in visited:
        if v.first and v.module.training != root_mode and not (tops and v.name.startswith(tops[-1] + ".")):
            tops.append(v.name)
    if not tops:
        return []
    mode, other = ("train", "eval") if root_mode else ("eval", "train")
    return [
        Finding(
            "mixed_training_mode",
            tops[0],
            f"model is in {mode} mode but {len(tops)} submodule(s) are in {other} mode: {_listing(tops)}",
        )
    ]


_BATCH_ELEMENTS = 1 << 20  # small tensors are checked together, one reduction per ~1M elements
_SMALL = 1 << 16


def _nonfinite(tensors: CollectedTensors) -> list[Finding]:
    """Tensors holding NaN/Inf. One sum per batch of tensors: a NaN/Inf anywhere makes the sum non-finite."""
    batches: dict[tuple, list[list[tuple[str, torch.Tensor]]]] = defaultdict(lambda: [[]])
    sizes: dict[tuple, int] = defaultdict(int)
    shards = set()  # DTensors: this rank reads its own shard (DTensor ops could be collectives)
    for name, tensor in tensors.objects.items():
        if is_lazy(tensor):
            continue
        if is_dtensor(tensor):
            tensor = local_of(tensor)
            shards.add(name)
        if tensor.is_meta or _is_wrapper(tensor):
            continue
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if tensor.numel() >= _SMALL:  # big tensors are reduced on their own: copying them would cost more
            batches[(name,)] = [[(name, tensor.detach())]]
            continue
        key = (tensor.device, tensor.dtype)
        if sizes[key] + tensor.numel() > _BATCH_ELEMENTS and batches[key][-1]:
            batches[key].append([])
            sizes[key] = 0
        batches[key][-1].append((name, tensor.detach()))
        sizes[key] += tensor.numel()
    suspects = []
    with torch.no_grad():
        for groups in batches.values():
            for group in groups:
                flat = group[0][1].reshape(-1) if len(group) == 1 else torch.cat([t.reshape(-1) for _, t in group])
                if not torch.isfinite(flat.sum()).item():
                    suspects.extend(group)
    buffers = {info.name for info in tensors.buffers}
    out = []
    for name, data in suspects:
        nan, inf, negative = count_nonfinite(data)
        where = " in this rank's shard" if name in shards else ""
        finding = nonfinite_finding(name, nan, inf, negative, data.numel(), buffer=name in buffers, where=where)
        if finding is not None:  # None: the batch sum merely overflowed (e.g. float16)
            out.append(finding)
    return out


def count_nonfinite(data: torch.Tensor) -> tuple[int, int, int]:
    """(NaN, Inf of either sign, -Inf) counts of one tensor (complex values count as Inf, never as -Inf)."""
    with torch.no_grad():
        nan = int(torch.isnan(data).sum())
        inf = int(torch.isinf(data).sum())
        negative = int(torch.isneginf(data).sum()) if inf and not data.is_complex() else 0
    return nan, inf, negative


def nonfinite_finding(
    name: str, nan: int, inf: int, negative: int, numel: int | None, *, buffer: bool, where: str = ""
) -> Finding | None:
    """An error for NaN/Inf values; a buffer whose only non-finite values are -inf is a mask (an info).

    Attention masks are built as ``torch.full((T, T), float("-inf")).triu(1)``: -inf is their data, not a fault.
    A parameter holding -inf, or a buffer holding NaN or +inf, stays an error.
    """
    if not (nan or inf):
        return None
    if buffer and not nan and inf == negative:
        return Finding(
            "mask_buffer", name,
            f"buffer {name} is a mask: {negative} of {numel} values are -inf (masked positions, as in a causal "
            f"attention mask){where}; not an error",
            Severity.INFO,
        )
    return Finding(
        "nonfinite_weights", name, f"{name} holds {nan} NaN and {inf} Inf values out of {numel}{where}",
        Severity.ERROR,
    )


def _is_wrapper(tensor: torch.Tensor) -> bool:
    """Wrapper subclasses other than DTensor (whose shard is read above) hold no data of their own."""
    return hasattr(tensor, "_local_tensor")


def device_matches(actual: str, expected: str) -> bool:
    """'cuda' matches 'cuda:0'; 'cuda:1' matches only itself."""
    want = torch.device(expected)
    got = torch.device(actual)
    return got.type == want.type and (want.index is None or got.index == want.index)


def _expect_device(infos, expected: str) -> list[Finding]:
    wrong: dict[str, list[str]] = defaultdict(list)
    for info in infos:
        if not device_matches(info.device, expected):
            wrong[info.device].append(info.name)
    return [
        Finding(
            "device_mismatch",
            names[0],
            f"{len(names)} tensors are on {device}, expected {expected}: {_listing(names)}",
            Severity.ERROR,
        )
        for device, names in wrong.items()
    ]


def _expect_dtype(infos, expected: torch.dtype, types: dict[str, str], allow: tuple[str, ...]) -> list[Finding]:
    want = dtype_name(expected)
    wrong: dict[str, list[str]] = defaultdict(list)
    for info in infos:
        if not _is_float(info.dtype) or info.dtype == want:
            continue
        if _allowed(info.name, types.get(info.module, ""), allow):
            continue
        wrong[info.dtype].append(info.name)
    return [
        Finding(
            "dtype_mismatch",
            names[0],
            f"{len(names)} floating tensors are {dtype}, expected {want}: {_listing(names)}",
            Severity.ERROR,
        )
        for dtype, names in wrong.items()
    ]


def _allowed(name: str, module_type: str, allow: tuple[str, ...]) -> bool:
    text = f"{name} {module_type}".lower()
    return any(pattern.lower() in text for pattern in allow)


def _module_types(visited: list[Visit]) -> dict[str, str]:
    return {v.name: type(v.module).__name__ for v in visited if v.first}


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "complex"))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")
