"""Model-level DTensor / FSDP2 facts for one rank: sharding summary, findings, checksums, and the texts that
``modscope.api.distributed`` uses when it gathers them from every rank.

Nothing here calls a collective (see ``collect/dtensor.py``); ``modscope.api.distributed`` does the gathering.
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections import defaultdict

import torch

from modscope.collect.distributed.dtensor import (
    _fsdp_module_types,
    local_of,
    process_group_state,
)
from modscope.collect.static.audit import count_nonfinite
from modscope.core.walk import Visit
from modscope.reports import Finding
from modscope.reports.distributed import DistributedInfo, MeshInfo, RankInfo

_MAX_LISTED = 5
_CHUNK = 1 << 22  # elements per step when checksumming (bounded temporary memory)


def has_dtensors(tensors) -> bool:
    return any(i.sharding is not None for i in (*tensors.parameters, *tensors.buffers))


def distributed_info(visited: list[Visit], tensors) -> DistributedInfo:
    """This rank's view: meshes, placement counts, FSDP units and the bytes it holds."""
    rank, world, backend = process_group_state()
    mesh_params: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    sharded = replicated = partial = plain = plain_numel = 0
    for info in tensors.parameters:
        s = info.sharding
        if s is None:
            plain += 1
            plain_numel += info.numel or 0
            continue
        mesh_params[s.mesh][0] += 1
        mesh_params[s.mesh][1] += info.numel or 0
        if s.partial:
            partial += 1
        elif s.replicated:
            replicated += 1
        else:
            sharded += 1
    meshes = tuple(
        MeshInfo(
            id=ident,
            device_type=key[0],
            shape=key[1],
            dim_names=key[3],
            ranks=key[2],
            params=mesh_params[ident][0],
            param_numel=mesh_params[ident][1],
        )
        for ident, key, _ in tensors.meshes.items()
    )
    fsdp_types = _fsdp_module_types()
    fsdp = tuple(v.name for v in visited if v.first and fsdp_types and isinstance(v.module, fsdp_types))
    return DistributedInfo(
        rank=rank,
        world_size=world,
        backend=backend,
        meshes=meshes,
        fsdp_modules=fsdp,
        sharded_params=sharded,
        replicated_params=replicated,
        partial_params=partial,
        plain_params=plain,
        plain_param_numel=plain_numel,
        this_rank=this_rank_info(tensors, rank),
    )


def this_rank_info(tensors, rank: int | None) -> RankInfo:
    param_numel = param_bytes = buffer_bytes = 0
    devices = set()
    for info in tensors.parameters:
        numel, nbytes = _local_size(info)
        param_numel += numel
        param_bytes += nbytes
        devices.add(info.device)
    for info in tensors.buffers:
        buffer_bytes += _local_size(info)[1]
        devices.add(info.device)
    local_rank = os.environ.get("LOCAL_RANK")
    return RankInfo(
        rank=0 if rank is None else rank,
        host=socket.gethostname(),
        local_rank=int(local_rank) if local_rank and local_rank.isdigit() else None,
        devices=tuple(sorted(devices)),
        param_numel=param_numel,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
    )


def _local_size(info) -> tuple[int, int]:
    if info.sharding is not None:
        return info.sharding.local_numel, info.sharding.local_bytes
    return info.numel or 0, info.bytes or 0


def distributed_findings(tensors, info: DistributedInfo) -> list[Finding]:
    """unsharded_parameter, replicated_parameter, partial_parameter, mixed_mesh.

    Under FSDP every plain parameter is a problem (no unit reduces its gradients, so its copies drift apart);
    without FSDP units (tensor parallelism alone) plain vectors such as norm weights are the usual
    replicated-by-construction case, and only plain matrices are reported.
    """
    meshes = info.meshes
    params = tensors.parameters
    dtensors = [p for p in params if p.sharding is not None]
    if not dtensors:
        return []
    out: list[Finding] = []
    sizes = {m.id: len(m.ranks) for m in meshes}
    plain = [p for p in params if p.sharding is None and p.initialized]
    if not info.fsdp_modules:
        plain = [p for p in plain if len(p.shape or ()) >= 2]
    if plain:
        numel = sum(p.numel or 0 for p in plain)
        out.append(
            Finding(
                "unsharded_parameter",
                plain[0].name,
                f"{len(plain)} parameter(s) ({_count(numel)} elements) are plain tensors while {len(dtensors)} are "
                f"DTensors: every rank holds them in full and "
                + (
                    "no fully_shard unit reduces their gradients, so the copies drift apart (outside every "
                    "fully_shard? shard the root too)"
                    if info.fsdp_modules
                    else "tensor parallelism does not split them (not in the parallelize_module plan?)"
                )
                + f": {_listing([p.name for p in plain])}",
            )
        )
    replicated = [
        p for p in dtensors
        if p.sharding.replicated and sizes.get(p.sharding.mesh, 1) > 1 and len(p.shape or ()) >= 2
    ]  # fmt: skip
    if replicated:
        numel = sum(p.numel or 0 for p in replicated)
        out.append(
            Finding(
                "replicated_parameter",
                replicated[0].name,
                f"{len(replicated)} DTensor weight matrices ({_count(numel)} elements) are Replicate() on every "
                f"dimension of their mesh, so every rank holds them in full: "
                f"{_listing([p.name for p in replicated])} (shard them unless that is intended)",
            )
        )
    partial = [p for p in dtensors if p.sharding.partial]
    if partial:
        out.append(
            Finding(
                "partial_parameter",
                partial[0].name,
                f"{len(partial)} parameter(s) have a Partial placement (each rank holds an unreduced part; the "
                f"value exists only after a reduction): {_listing([p.name for p in partial])}",
            )
        )
    used = [m for m in meshes if m.params]
    if len(used) > 1:
        listing = "; ".join(f"{m.id} {m.label}: {m.params} parameter(s)" for m in used)
        out.append(
            Finding(
                "mixed_mesh",
                "",
                f"parameters live on {len(used)} different device meshes ({listing}): optimizers and "
                "clip_grad_norm_ that combine all parameters fail or need per-mesh handling",
            )
        )
    return out


# --- what each rank sends when a report is gathered --------------------------------------------------------


def structure_digest(tensors) -> str:
    """Equal on ranks that hold the same model (names, global shapes, dtypes, placements, mesh layouts)."""
    mesh_keys = {ident: key for ident, key, _ in tensors.meshes.items()}
    h = hashlib.blake2b(digest_size=12)
    for info in (*tensors.parameters, *tensors.buffers):
        s = info.sharding
        layout = None if s is None else (s.placements, mesh_keys.get(s.mesh))
        h.update(repr((info.name, info.kind.value, info.shape, info.dtype, layout)).encode())
    return h.hexdigest()


def scan_local(tensors, *, checksums) -> tuple[dict[str, tuple[int, int, int, int]], list]:
    """One pass over this rank's local data: (NaN, Inf, elements, -Inf) per floating tensor holding any, and an exact bit checksum
    per parameter in ``tensors.parameters`` order for the names in ``checksums`` (None elsewhere: nothing to
    compare it with, e.g. a shard no other rank holds).
    """
    wanted = set(checksums or ())
    nonfinite: dict[str, tuple[int, int, int]] = {}
    sums: dict[str, tuple[int, int] | None] = {}
    for name, tensor in tensors.objects.items():
        data = _readable(tensor)
        if data is None:
            continue
        with torch.no_grad():
            if data.is_floating_point() or data.is_complex():
                if not torch.isfinite(data.sum()).item():
                    nan, inf, negative = count_nonfinite(data)
                    if nan or inf:
                        nonfinite[name] = (nan, inf, data.numel(), negative)
            if name in wanted:
                sums[name] = bit_checksum(data)
    return nonfinite, [sums.get(p.name) for p in tensors.parameters]


def _readable(tensor) -> torch.Tensor | None:
    from torch.nn.parameter import is_lazy

    if is_lazy(tensor):
        return None
    data = local_of(tensor).detach()
    if data.is_meta:
        return None
    return data


def bit_checksum(data: torch.Tensor) -> tuple[int, int] | None:
    """(sum, position-weighted sum) of the raw bits read as integers, wrapping in int64: exact and
    independent of summation order, memory alignment and device, so equal tensors give equal checksums on
    any rank. Works chunk by chunk (bounded temporary memory)."""
    if data.numel() == 0:
        return (0, 0)
    if not data.is_contiguous():
        data = data.contiguous()
    # reinterpret each element as integers of its own width (at most 4 bytes): a view that needs no alignment
    word = {1: torch.uint8, 2: torch.int16}.get(data.element_size(), torch.int32)
    try:
        words = data.reshape(-1).view(word)
    except RuntimeError:
        return None
    total = weighted = 0
    with torch.no_grad():
        for start in range(0, words.numel(), _CHUNK):
            part = words[start : start + _CHUNK].to(torch.int64)
            weights = torch.arange(start, start + part.numel(), device=part.device, dtype=torch.int64) % 251 + 1
            total += int(part.sum())
            weighted += int((part * weights).sum())
    return (total & 0xFFFFFFFFFFFFFFFF, weighted & 0xFFFFFFFFFFFFFFFF)


# --- small text helpers ------------------------------------------------------------------------------------


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _count(n: int) -> str:
    from modscope.core.text import human_count

    return human_count(n)


def failures_text(failed: list[tuple[int, str]], world: int) -> str:
    """'2 of 8 ranks failed: ranks 0-7: <message>' with identical messages grouped."""
    by_message: dict[str, list[int]] = {}
    for rank, message in failed:
        by_message.setdefault(message, []).append(rank)
    parts = [f"rank(s) {rank_ranges(ranks)}: {message}" for message, ranks in list(by_message.items())[:_MAX_LISTED]]
    more = f" (and {len(by_message) - _MAX_LISTED} more distinct errors)" if len(by_message) > _MAX_LISTED else ""
    if len(failed) == world == 1:
        return failed[0][1]
    return f"{len(failed)} of {world} rank(s) failed: " + "; ".join(parts) + more


def rank_ranges(ranks) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    ranks = sorted(set(ranks))
    out = []
    i = 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        out.append(str(ranks[i]) if i == j else f"{ranks[i]}-{ranks[j]}")
        i = j + 1
    return ", ".join(out)


__all__ = [
    "bit_checksum",
    "distributed_findings",
    "distributed_info",
    "failures_text",
    "has_dtensors",
    "rank_ranges",
    "scan_local",
    "structure_digest",
    "this_rank_info",
]
