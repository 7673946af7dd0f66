"""The no-side-effect contract: snapshot everything an analysis could disturb, then compare."""
from __future__ import annotations

import torch
from torch.nn.parameter import is_lazy

#: nn.Module's own tables in every __dict__ (checked above through modes, hooks and named tensors).
_MODULE_OWN = frozenset(vars(torch.nn.Module()))
_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


def snapshot(model: torch.nn.Module) -> dict:
    """Modes, hook counts, plain attributes (identity; values of tensors), and per tensor: identity,
    requires_grad, grad identity+value, device, dtype, value; the class of every module and tensor (a lazy
    module that ran becomes its ``cls_to_become``, a lazy tensor a Parameter)."""
    state = {"modules": {}, "tensors": {}, "attributes": {}, "types": {}}
    for name, module in model.named_modules(remove_duplicate=False):
        state["types"][name] = type(module)
        state["modules"][name] = (
            module.training,
            tuple(len(getattr(module, t, {})) for t in _HOOK_TABLES),
        )
        if not isinstance(module, torch.jit.ScriptModule):
            state["attributes"][name] = {
                key: (id(value), _value(value) if isinstance(value, torch.Tensor) else None)
                for key, value in vars(module).items()
                if key not in _MODULE_OWN
            }
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    ):
        grad = None if t.grad is None else (id(t.grad), t.grad.detach().clone())
        state["tensors"][name] = (id(t), t.requires_grad, grad, t.device, t.dtype, _value(t))
        state["types"][f"tensor {name}"] = type(t)
    return state


def _value(t: torch.Tensor) -> torch.Tensor | None:
    return None if is_lazy(t) or t.is_meta else t.detach().clone()


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["types"] == before["types"], "a module or tensor changed class (a lazy module materialised?)"
    assert after["modules"].keys() == before["modules"].keys()
    for name, (training, hooks) in before["modules"].items():
        assert after["modules"][name][0] == training, f"{name or 'root'}: train/eval mode changed"
        assert after["modules"][name][1] == hooks, f"{name or 'root'}: hooks left behind"
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, (ident, rg, grad, device, dtype, value) in before["tensors"].items():
        a_ident, a_rg, a_grad, a_device, a_dtype, a_value = after["tensors"][name]
        assert a_ident == ident, f"{name}: tensor object replaced"
        assert a_rg == rg, f"{name}: requires_grad changed"
        assert a_device == device and a_dtype == dtype, f"{name}: moved or cast"
        if grad is None:
            assert a_grad is None, f"{name}: .grad appeared"
        else:
            assert a_grad is not None and a_grad[0] == grad[0], f"{name}: .grad replaced"
            assert _same(a_grad[1], grad[1]), f"{name}: .grad values changed"
        if value is not None:
            assert _same(a_value, value), f"{name}: values changed"
    assert after["attributes"].keys() == before["attributes"].keys()
    for name, attributes in before["attributes"].items():
        where = name or "root"
        a_attributes = after["attributes"][name]
        assert a_attributes.keys() == attributes.keys(), f"{where}: attributes added or removed"
        for key, (ident, value) in attributes.items():
            assert a_attributes[key][0] == ident, f"{where}.{key}: attribute replaced"
            if value is not None:
                assert _same(a_attributes[key][1], value), f"{where}.{key}: tensor attribute's values changed"


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal values, NaN equal to NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():  # torch.equal first: one cheap pass when nothing is NaN
        return torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    return torch.equal(a, b)


def passes(assertion, model: torch.nn.Module, *args, **kwargs):
    """Call a ``modscope.testing`` assertion that should pass; the model must come out untouched."""
    before = snapshot(model)
    result = assertion(model, *args, **kwargs)
    assert_unchanged(model, before)
    return result


def failure(assertion, model: torch.nn.Module, *args, **kwargs) -> str:
    """Call a ``modscope.testing`` assertion that should fail; return its message (the model must come out
    untouched)."""
    import pytest

    before = snapshot(model)
    with pytest.raises(AssertionError) as info:
        assertion(model, *args, **kwargs)
    assert_unchanged(model, before)
    return str(info.value)
