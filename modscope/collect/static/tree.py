"""The submodule tree: one record per module with direct/recursive counts and a structural signature."""
from __future__ import annotations

from collections import defaultdict

from torch.nn.parameter import is_lazy

from modscope.collect.static.tensors import CollectedTensors
from modscope.core.walk import Visit
from modscope.reports import ModuleInfo, SharedGroup, SharedKind

_EXTRA_MAX = 120


def collect_modules(visited: list[Visit], tensors: CollectedTensors) -> tuple[list[ModuleInfo], list[SharedGroup]]:
    """Module records in pre-order (first names only) plus groups of modules registered under several names."""
    firsts = [v for v in visited if v.first]
    aliases: dict[int, list[str]] = defaultdict(list)
    for v in visited:
        if not v.first:
            aliases[id(v.module)].append(v.name)

    direct_params: dict[str, int] = defaultdict(int)
    direct_trainable: dict[str, int] = defaultdict(int)
    direct_buffers: dict[str, int] = defaultdict(int)
    for info in tensors.parameters:
        direct_params[info.module] += info.numel or 0
        if info.requires_grad:
            direct_trainable[info.module] += info.numel or 0
    for info in tensors.buffers:
        direct_buffers[info.module] += info.numel or 0

    children: dict[str, list[str]] = defaultdict(list)
    for v in firsts:
        if v.parent is not None:
            children[v.parent].append(v.name)

    # Bottom-up pass: reversed pre-order visits every child before its parent.
    params_total: dict[str, int] = {}
    buffers_total: dict[str, int] = {}
    trainable_total: dict[str, int] = {}
    signature: dict[str, str] = {}
    extra = {v.name: _extra_repr(v.module) for v in firsts}
    for v in reversed(firsts):
        kids = children[v.name]
        params_total[v.name] = direct_params[v.name] + sum(params_total[k] for k in kids)
        buffers_total[v.name] = direct_buffers[v.name] + sum(buffers_total[k] for k in kids)
        trainable_total[v.name] = direct_trainable[v.name] + sum(trainable_total[k] for k in kids)
        signature[v.name] = _signature(v, extra[v.name], kids, signature)

    records = [
        ModuleInfo(
            name=v.name,
            type=type(v.module).__name__,
            depth=v.depth,
            params=direct_params[v.name],
            params_total=params_total[v.name],
            buffers=direct_buffers[v.name],
            buffers_total=buffers_total[v.name],
            trainable_total=trainable_total[v.name],
            training=bool(v.module.training),
            children=tuple(children[v.name]),
            extra=extra[v.name],
            aliases=tuple(aliases.get(id(v.module), ())),
            signature=signature[v.name],
        )
        for v in firsts
    ]
    groups = [SharedGroup((r.name, *r.aliases), SharedKind.MODULE) for r in records if r.aliases]
    return records, groups


def _signature(visit: Visit, extra: str, kids: list[str], signature: dict[str, str]) -> str:
    """Equal for modules of the same type, tensor layout and child structure (names relative)."""
    module = visit.module
    tensors = tuple(
        (key, "lazy" if is_lazy(t) else tuple(t.shape), t.dtype, t.requires_grad, repr(getattr(t, "placements", "")))
        for table in (module._parameters, module._buffers)
        for key, t in table.items()
        if t is not None
    )
    prefix = len(visit.name) + 1 if visit.name else 0
    children = tuple((k[prefix:], signature[k]) for k in kids)
    return format(hash((type(module).__qualname__, extra, tensors, children)) & 0xFFFFFFFFFFFFFFFF, "016x")


def _extra_repr(module) -> str:
    try:
        text = module.extra_repr()
    except Exception:  # a user's extra_repr may fail on odd state (e.g. lazy modules); it is only decoration
        return ""
    text = " ".join(text.split())
    return text if len(text) <= _EXTRA_MAX else text[: _EXTRA_MAX - 1] + "…"
