"""Parameters and buffers, each listed once, with every name it is reachable under and storage aliases."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.nn.parameter import is_lazy

from modscope.collect.distributed.dtensor import MeshRegistry, sharding_of
from modscope.core.walk import Visit, join
from modscope.reports import SharedGroup, SharedKind, TensorInfo, TensorKind


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class CollectedTensors:
    parameters: list[TensorInfo]
    buffers: list[TensorInfo]
    shared: list[SharedGroup]
    owner_of: dict[str, str]  # canonical tensor name -> owning module name
    objects: dict[str, torch.Tensor]  # canonical tensor name -> the tensor (for audits; never stored in reports)
    meshes: MeshRegistry | None = None  # device meshes of DTensors, in order of first use


def collect_tensors(visited: list[Visit]) -> CollectedTensors:
    """Group parameters/buffers by object identity; the first name met in pre-order is canonical."""
    names: dict[int, list[str]] = defaultdict(list)
    first: dict[int, tuple[str, str, torch.Tensor, TensorKind, bool]] = {}
    for visit in visited:
        module = visit.module
        non_persistent = getattr(module, "_non_persistent_buffers_set", set())
        for kind, table in ((TensorKind.PARAMETER, module._parameters), (TensorKind.BUFFER, module._buffers)):
            for key, tensor in table.items():
                if tensor is None:
                    continue
                full = join(visit.name, key)
                names[id(tensor)].append(full)
                if id(tensor) not in first:
                    first[id(tensor)] = (full, visit.name, tensor, kind, key not in non_persistent)

    parameters: list[TensorInfo] = []
    buffers: list[TensorInfo] = []
    shared: list[SharedGroup] = []
    objects: dict[str, torch.Tensor] = {}
    owner_of: dict[str, str] = {}
    meshes = MeshRegistry()
    for key, (name, owner, tensor, kind, persistent) in first.items():
        aliases = tuple(n for n in names[key] if n != name)
        info = _describe(name, owner, tensor, kind, persistent, aliases, meshes)
        (parameters if kind is TensorKind.PARAMETER else buffers).append(info)
        objects[name] = tensor
        owner_of[name] = owner
        if aliases:
            shared.append(SharedGroup((name, *aliases), SharedKind.TIED))
    shared.extend(_storage_aliases(objects))
    return CollectedTensors(parameters, buffers, shared, owner_of, objects, meshes)


def trainable_parameters(model: torch.nn.Module) -> list[tuple[TensorInfo, torch.Tensor]]:
    """(info, tensor) for every initialised parameter with requires_grad, each object once, in pre-order."""
    from modscope.core.walk import visits

    collected = collect_tensors(visits(model))
    return [(info, collected.objects[info.name]) for info in collected.parameters
            if info.requires_grad and info.initialized]


def _describe(name, owner, tensor, kind, persistent, aliases, meshes: MeshRegistry) -> TensorInfo:
    """Shape/numel/bytes are GLOBAL for a DTensor (its logical size, counted once); ``sharding`` has the shard."""
    lazy = is_lazy(tensor)
    numel = None if lazy else tensor.numel()
    return TensorInfo(
        name=name,
        module=owner,
        kind=kind,
        shape=None if lazy else tuple(tensor.shape),
        dtype=dtype_name(tensor.dtype),
        device=str(tensor.device),
        numel=numel,
        bytes=None if lazy else numel * tensor.element_size(),
        requires_grad=bool(tensor.requires_grad),
        persistent=None if kind is TensorKind.PARAMETER else persistent,
        shared_with=aliases,
        sharding=None if lazy else sharding_of(tensor, meshes),
    )


def _storage_aliases(objects: dict[str, torch.Tensor]) -> list[SharedGroup]:
    """Distinct tensor objects that live in the same storage (views, ``.data`` assignment)."""
    by_storage: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name, tensor in objects.items():
        if is_lazy(tensor) or tensor.is_meta or _is_wrapper(tensor):
            continue
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            continue  # sparse, quantized or other layouts without a plain storage
        if storage.nbytes() == 0:
            continue
        by_storage[(str(tensor.device), storage.data_ptr())].append(name)
    return [SharedGroup(tuple(group), SharedKind.STORAGE) for group in by_storage.values() if len(group) > 1]


def _is_wrapper(tensor: torch.Tensor) -> bool:
    """Wrapper subclasses such as DTensor hold their data in an inner tensor, not in a storage of their own."""
    return hasattr(tensor, "_local_tensor")
