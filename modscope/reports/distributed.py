"""Reports of distributed models: DTensor sharding per tensor, device meshes, and what each rank holds.

Plain data only (no torch): ``ShardingInfo`` hangs off a ``TensorInfo``; ``DistributedInfo`` hangs off a
summary/audit report when the model holds DTensors or when the report was gathered from several ranks
(``modscope.distributed_summary``). Shapes in ``TensorInfo`` stay GLOBAL; ``local_*`` fields are one rank's
shard of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeshInfo:
    """One device mesh. ``ranks`` are global ranks in row-major mesh order (``mesh.mesh.flatten()``)."""

    id: str  # "mesh0", "mesh1", ... in order of first use
    device_type: str
    shape: tuple[int, ...]
    dim_names: tuple[str, ...] | None
    ranks: tuple[int, ...]
    params: int = 0  # parameter tensors placed on it
    param_numel: int = 0  # their global elements

    @property
    def label(self) -> str:
        """'(dp=2, tp=4) cuda' / '(8,) cpu'."""
        if self.dim_names:
            dims = ", ".join(f"{n}={s}" for n, s in zip(self.dim_names, self.shape))
        else:
            dims = ", ".join(str(s) for s in self.shape) + ("," if len(self.shape) == 1 else "")
        return f"({dims}) {self.device_type}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device_type": self.device_type,
            "shape": list(self.shape),
            "dim_names": None if self.dim_names is None else list(self.dim_names),
            "size": len(self.ranks),
            "ranks": list(self.ranks),
            "params": self.params,
            "param_numel": self.param_numel,
        }


@dataclass(frozen=True)
class ShardingInfo:
    """How one DTensor is laid out: its mesh, one placement per mesh dimension, and this rank's shard.

    ``placements`` read ``Shard(0)``, ``Replicate()``, ``Partial(sum)``, ``StridedShard(0, sf=2)``.
    ``local_numel_min``/``_max`` are the smallest and largest shard over every rank of the mesh (computed
    from the placements, no communication): unequal means uneven sharding (``torch.chunk`` rule).
    """

    mesh: str
    placements: tuple[str, ...]
    local_shape: tuple[int, ...]
    local_numel: int
    local_bytes: int
    global_offset: tuple[int, ...] | None = None
    local_numel_min: int | None = None
    local_numel_max: int | None = None

    @property
    def replicated(self) -> bool:
        """Replicate() on every mesh dimension: every rank of the mesh holds the whole tensor."""
        return all(p == "Replicate()" for p in self.placements)

    @property
    def partial(self) -> bool:
        return any(p.startswith("Partial") for p in self.placements)

    @property
    def sharded(self) -> bool:
        return any("Shard(" in p for p in self.placements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mesh": self.mesh,
            "placements": list(self.placements),
            "local_shape": list(self.local_shape),
            "local_numel": self.local_numel,
            "local_bytes": self.local_bytes,
            "global_offset": None if self.global_offset is None else list(self.global_offset),
            "local_numel_min": self.local_numel_min,
            "local_numel_max": self.local_numel_max,
        }


@dataclass(frozen=True)
class RankInfo:
    """What one rank holds. Parameters/buffers that are plain tensors count in full on every rank."""

    rank: int
    host: str
    local_rank: int | None
    devices: tuple[str, ...]  # devices its local tensors live on
    param_numel: int  # local elements of parameters (DTensor shards + plain parameters)
    param_bytes: int
    buffer_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "host": self.host,
            "local_rank": self.local_rank,
            "devices": list(self.devices),
            "param_numel": self.param_numel,
            "param_bytes": self.param_bytes,
            "buffer_bytes": self.buffer_bytes,
        }


@dataclass(frozen=True)
class DistributedInfo:
    """The distributed layout of a model as seen from ``rank`` (and from every rank when ``gathered``).

    Parameter counts are tensors; ``*_numel`` are GLOBAL elements (each counted once, as in the totals).
    ``this_rank`` is what the reporting rank holds; ``ranks`` is filled only in gathered reports.
    """

    rank: int | None  # None: torch.distributed not initialised in this process
    world_size: int | None
    backend: str | None
    meshes: tuple[MeshInfo, ...]
    fsdp_modules: tuple[str, ...]  # modules wrapped by fully_shard (FSDP2 units)
    sharded_params: int
    replicated_params: int
    partial_params: int
    plain_params: int  # parameters that are not DTensors
    plain_param_numel: int
    this_rank: RankInfo
    ranks: tuple[RankInfo, ...] = ()
    gathered: bool = False

    @property
    def dtensor_params(self) -> int:
        return self.sharded_params + self.replicated_params + self.partial_params

    @property
    def total_param_bytes_all_ranks(self) -> int | None:
        """Bytes of parameters summed over every rank (replicas counted on each): gathered reports only."""
        return sum(r.param_bytes for r in self.ranks) if self.ranks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "backend": self.backend,
            "gathered": self.gathered,
            "meshes": [m.to_dict() for m in self.meshes],
            "fsdp_modules": list(self.fsdp_modules),
            "params": {
                "sharded": self.sharded_params,
                "replicated": self.replicated_params,
                "partial": self.partial_params,
                "plain": self.plain_params,
                "plain_numel": self.plain_param_numel,
            },
            "this_rank": self.this_rank.to_dict(),
            "ranks": [r.to_dict() for r in self.ranks],
            "param_bytes_all_ranks": self.total_param_bytes_all_ranks,
        }
