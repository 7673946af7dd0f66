"""Static hazards: plain tensors and submodules hidden in attributes, uninitialized lazy tensors, tensors on
``meta``. Attributes are read one level deep (a tensor, or a list/tuple/dict of them): never a deep scan."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.static.tensors import CollectedTensors
from modscope.core.walk import Visit, join, visits
from modscope.reports import Finding
from modscope.reports.static import Severity

# nn.Module's own bookkeeping attributes (_parameters, _buffers, _modules, hook tables, ...)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def find_hazards(visited: list[Visit], tensors: CollectedTensors) -> list[Finding]:
    findings = list(_unregistered(visited, tensors))
    meta: list[str] = []
    for name, tensor in tensors.objects.items():
        if is_lazy(tensor):
            findings.append(
                Finding(
                    "uninitialized_parameter",
                    name,
                    f"{name} is an uninitialized lazy tensor: its shape is known only after the first forward "
                    "pass (run one, or pass --input)",
                )
            )
        elif tensor.is_meta:
            meta.append(name)
    if meta:  # one finding: a model built on meta has thousands of such tensors
        listed = ", ".join(meta[:5]) + (f" and {len(meta) - 5} more" if len(meta) > 5 else "")
        what = f"{meta[0]} is" if len(meta) == 1 else f"{len(meta)} tensors are"
        findings.append(Finding("meta_tensor", meta[0], f"{what} on the meta device (shapes, no data): {listed}"))
    return findings


def _unregistered(visited: list[Visit], tensors: CollectedTensors):
    """Tensors and modules stored as plain attributes (or in plain lists/tuples/dicts): they do not follow
    ``.to()``, are missing from state_dict and are invisible to optimizers. Ones registered elsewhere in the
    tree (``self.layers = [self.a, self.b]``) are only references, and fine."""
    tensor_ids = {id(t) for t in tensors.objects.values()}
    module_ids = {id(v.module) for v in visited}
    counted: set[int] = set()  # hidden parameters already counted by an earlier finding
    stateless: dict[tuple, list[str]] = {}  # (attribute, container, types) -> where: reported once, as an info
    for visit in visited:
        if not visit.first:
            continue
        for attr, value in vars(visit.module).items():
            if attr in _MODULE_INTERNALS:
                continue
            for label, tensor in plain_tensors(attr, value):
                if id(tensor) not in tensor_ids:
                    yield _tensor_finding(join(visit.name, label), tensor)
            hidden = [m for m in plain_modules(value) if id(m) not in module_ids]
            if hidden and _stateless(hidden):  # e.g. transformers' attention kernel table: nothing to move or save
                kind = (attr, _container(value), tuple(sorted({type(m).__name__ for m in hidden})))
                stateless.setdefault(kind, []).append(join(visit.name, attr))
            elif hidden:
                yield _module_finding(join(visit.name, attr), value, hidden, tensor_ids, counted)
    for (_, container, types), names in stateless.items():  # one info per kind, not one per layer
        where = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more like it"
        yield Finding(
            "unregistered_module",
            names[0],
            f"{where}: a {container} holding unregistered submodule(s) ({', '.join(types[:3])}"
            f"{', ...' if len(types) > 3 else ''}) with no parameters, buffers, dropout or normalization: only "
            "hooks and .train()/.eval() do not reach them",
            Severity.INFO,
        )


def _tensor_finding(name: str, tensor: torch.Tensor) -> Finding:
    return Finding(
        "unregistered_tensor",
        name,
        f"{name} is a plain {type(tensor).__name__} attribute {tuple(tensor.shape)} on {tensor.device}, "
        "not a registered parameter/buffer: .to() will not move it, state_dict will not save it and "
        "optimizers will not see it (use register_buffer, nn.Parameter or ParameterList/ParameterDict)",
    )


def _module_finding(name: str, value, hidden: list[nn.Module], tensor_ids: set[int], counted: set[int]) -> Finding:
    params = 0
    for module in {id(m): m for m in hidden}.values():
        for visit in visits(module):
            for p in visit.module._parameters.values():
                if p is not None and id(p) not in tensor_ids and id(p) not in counted and not is_lazy(p):
                    counted.add(id(p))
                    params += p.numel()
    types = sorted({type(m).__name__ for m in hidden})
    container = _container(value)
    fix = "register it with add_module" if isinstance(value, nn.Module) else (
        "use nn.ModuleDict" if isinstance(value, dict) else "use nn.ModuleList"
    )
    return Finding(
        "unregistered_module",
        name,
        f"{name} is a {container} holding {len(hidden)} unregistered submodule(s) ({', '.join(types[:3])}"
        f"{', ...' if len(types) > 3 else ''}) with {params:,} parameters that the totals do not count: they "
        "run, but .to(), .train()/.eval(), state_dict and model.parameters() (so the optimizer) do not reach "
        f"them ({fix})",
    )


def _container(value) -> str:
    return "module attribute" if isinstance(value, nn.Module) else f"plain {type(value).__name__}"


_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def _stateless(hidden: list[nn.Module]) -> bool:
    """No tensor anywhere under these modules, and none that behaves differently in train and eval mode."""
    for module in hidden:
        for visit in visits(module):
            tensors = (*visit.module._parameters.values(), *visit.module._buffers.values())
            if isinstance(visit.module, _MODE_DEPENDENT) or any(t is not None for t in tensors):
                return False
    return True


def plain_modules(value) -> list[nn.Module]:
    """Modules held by an attribute that nn.Module did not register: one set with ``__dict__`` directly, or
    the items of a plain list/tuple/dict (one level deep)."""
    if isinstance(value, nn.Module):
        return [value]
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, nn.Module)]
    if isinstance(value, dict):
        return [item for item in value.values() if isinstance(item, nn.Module)]
    return []


def plain_attributes(module: nn.Module):
    """(label, tensor) for every tensor in the module's own attributes, nn.Module's bookkeeping left out."""
    for attr, value in vars(module).items():
        if attr not in _MODULE_INTERNALS:
            yield from plain_tensors(attr, value)


def plain_tensors(attr: str, value):
    """Tensors (Parameters too: a Python list of Parameters is invisible to optimizers) in an attribute."""
    if isinstance(value, torch.Tensor):
        yield attr, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, torch.Tensor):
                yield f"{attr}[{i}]", item
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, torch.Tensor):
                yield f"{attr}[{key!r}]", item
