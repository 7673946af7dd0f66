"""Reading DTensors without communicating: types, placements, device meshes, local shards and their geometry.

Works on one rank, with or without an initialised process group, and on torch builds without
``torch.distributed`` (then nothing is a DTensor). Values are read through the local shard (``_local_tensor``),
never through DTensor ops, which may be collectives and would hang a report taken on one rank only.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from modscope.reports.distributed import ShardingInfo

# --- detection ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _dtensor_types() -> tuple[type, ...]:
    if not _dist_available():
        return ()
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.4 kept it in torch.distributed._tensor
        try:
            from torch.distributed._tensor import DTensor
        except ImportError:
            return ()
    return (DTensor,)


@lru_cache(maxsize=None)
def _fsdp_module_types() -> tuple[type, ...]:
    if not _dist_available():
        return ()
    for where in ("torch.distributed.fsdp", "torch.distributed._composable.fsdp"):
        try:
            module = __import__(where, fromlist=["FSDPModule"])
            return (module.FSDPModule,)
        except (ImportError, AttributeError):
            continue
    return ()


def _dist_available() -> bool:
    try:
        return torch.distributed.is_available()
    except AttributeError:
        return False


def is_dtensor(tensor) -> bool:
    types = _dtensor_types()
    return bool(types) and isinstance(tensor, types)


def local_of(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (no communication); any other tensor as it is."""
    if is_dtensor(tensor):
        return tensor._local_tensor
    return tensor


def process_group_state() -> tuple[int | None, int | None, str | None]:
    """(rank, world size, backend) of the default process group, or Nones when none is initialised."""
    if not _dist_available() or not torch.distributed.is_initialized():
        return None, None, None
    dist = torch.distributed
    try:
        backend = str(dist.get_backend())
    except Exception:  # a backend without a name (custom) is no reason to fail a report
        backend = None
    return dist.get_rank(), dist.get_world_size(), backend


# --- placements and meshes ---------------------------------------------------------------------------------


def placement_name(placement) -> str:
    """Shard(0), Replicate(), Partial(sum), StridedShard(0, sf=2); the repr for anything newer."""
    kind = type(placement).__name__
    if hasattr(placement, "split_factor") and hasattr(placement, "dim"):
        return f"StridedShard({placement.dim}, sf={placement.split_factor})"
    if kind == "Shard" or (hasattr(placement, "dim") and placement.is_shard()):
        return f"Shard({placement.dim})"
    if kind == "Replicate" or placement.is_replicate():
        return "Replicate()"
    if placement.is_partial():
        return f"Partial({getattr(placement, 'reduce_op', 'sum')})"
    return repr(placement)


def mesh_key(mesh) -> tuple:
    """Meshes with the same device type, layout, ranks and names are the same mesh (whatever the object)."""
    layout = mesh.mesh
    names = tuple(mesh.mesh_dim_names) if mesh.mesh_dim_names else None
    return (mesh.device_type, tuple(layout.shape), tuple(int(r) for r in layout.flatten().tolist()), names)


class MeshRegistry:
    """Gives each distinct device mesh a stable id (mesh0, mesh1, ... in order of first use)."""

    def __init__(self):
        self._ids: dict[tuple, str] = {}
        self._meshes: dict[str, object] = {}
        self._seen: dict[int, tuple[object, str]] = {}  # id(mesh) -> (mesh, ident): most params share one object

    def id_of(self, mesh) -> str:
        seen = self._seen.get(id(mesh))
        if seen is not None and seen[0] is mesh:
            return seen[1]
        key = mesh_key(mesh)
        if key not in self._ids:
            ident = f"mesh{len(self._ids)}"
            self._ids[key] = ident
            self._meshes[ident] = mesh
        self._seen[id(mesh)] = (mesh, self._ids[key])
        return self._ids[key]

    def __len__(self) -> int:
        return len(self._ids)

    def items(self):
        """(id, key, mesh object) in order of first use."""
        for key, ident in self._ids.items():
            yield ident, key, self._meshes[ident]

    def coordinates(self) -> dict[str, tuple[int, ...] | None]:
        """This rank's coordinate in every mesh (None where it is not a member)."""
        out = {}
        for ident, _, mesh in self.items():
            try:
                coord = mesh.get_coordinate()
            except Exception:
                coord = None
            out[ident] = None if coord is None else tuple(int(c) for c in coord)
        return out


def sharding_of(tensor, meshes: MeshRegistry) -> ShardingInfo | None:
    """How ``tensor`` is distributed, or None when it is not a DTensor."""
    if not is_dtensor(tensor):
        return None
    mesh = tensor.device_mesh
    placements = tuple(tensor.placements)
    local = tensor._local_tensor
    shape = tuple(tensor.shape)
    low, high = local_numel_range(shape, tuple(mesh.mesh.shape), placements)
    return ShardingInfo(
        mesh=meshes.id_of(mesh),
        placements=tuple(placement_name(p) for p in placements),
        local_shape=tuple(local.shape),
        local_numel=local.numel(),
        local_bytes=local.numel() * local.element_size(),
        global_offset=_global_offset(shape, mesh, placements),
        local_numel_min=low,
        local_numel_max=high,
    )


def _global_offset(shape, mesh, placements) -> tuple[int, ...] | None:
    try:  # private helper, present since DTensor exists; an offset is a nicety, not worth failing over
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        _, offset = compute_local_shape_and_global_offset(shape, mesh, placements)
        return tuple(int(o) for o in offset)
    except Exception:
        return None


def local_numel_range(shape: tuple[int, ...], mesh_shape: tuple[int, ...], placements) -> tuple[int, int]:
    """Smallest and largest shard over all mesh coordinates (``torch.chunk`` rule, as DTensor/FSDP2 split).

    Each tensor dim is split by the mesh dims that shard it, in mesh order; dims vary independently, so the
    extremes of the product are the products of the per-dim extremes.
    """
    low = high = 1
    for dim, size in enumerate(shape):
        sizes = {size}
        for mesh_dim, placement in enumerate(placements):
            if getattr(placement, "dim", None) == dim and placement.is_shard():
                ways = mesh_shape[mesh_dim]
                sizes = {part for s in sizes for part in _chunk_sizes(s, ways)}
        low *= min(sizes)
        high *= max(sizes)
    return low, high


def _chunk_sizes(n: int, ways: int) -> list[int]:
    if ways <= 1:
        return [n]
    step = -(-n // ways) if n else 0
    return [max(0, min(step, n - i * step)) for i in range(ways)]


# --- the model-level picture -------------------------------------------------------------------------------
