"""The one place where modscope touches a live model: hooks and state, always restored.

``preserved_state`` snapshots everything an analysis could disturb (train/eval flags, requires_grad, .grad,
device and dtype of every tensor, the model's hook tables) and puts it back on exit, even when the
model's forward raises. ``module_hooks`` registers per-module hooks inside it and removes them on exit.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.walk import visits

_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


@dataclass
class _TensorState:
    tensor: torch.Tensor
    requires_grad: bool
    grad: torch.Tensor | None
    device: torch.device
    dtype: torch.dtype


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, buffer_values: bool = False) -> Iterator[nn.Module]:
    """Restore modes, requires_grad, .grad, devices/dtypes and hook tables of ``model`` on exit.

    ``buffer_values=True`` also puts back the values of buffers (a training-mode forward updates BatchNorm's
    running statistics in place); it keeps one copy of every buffer that holds data.
    """
    modules = [v.module for v in visits(model) if v.first]
    modes = [(m, m.training) for m in modules]
    hook_keys = [(m, name, set(getattr(m, name, {}).keys())) for m in modules for name in _HOOK_TABLES]
    tensors: dict[int, _TensorState] = {}
    for m in modules:
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None and id(t) not in tensors:
                tensors[id(t)] = _TensorState(t, t.requires_grad, t.grad, t.device, t.dtype)
    saved_buffers = _copy_buffers(modules) if buffer_values else []
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for m, name, keys in hook_keys:
            table = getattr(m, name, None)
            if table is not None:
                for key in [k for k in table if k not in keys]:
                    del table[key]
        for state in tensors.values():
            _restore_tensor(state)
        with torch.no_grad():
            for buffer, value in saved_buffers:
                if buffer.shape == value.shape and buffer.device == value.device:
                    buffer.copy_(value)


def _copy_buffers(modules: list[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen: set[int] = set()
    out = []
    for m in modules:
        for b in m._buffers.values():
            if b is not None and id(b) not in seen and not b.is_meta and not is_lazy(b):
                seen.add(id(b))
                out.append((b, b.detach().clone()))
    return out


def _restore_tensor(state: _TensorState) -> None:
    t = state.tensor
    if t.is_leaf and t.requires_grad != state.requires_grad:
        t.requires_grad_(state.requires_grad)
    if t.grad is not state.grad:
        t.grad = state.grad
    if t.device != state.device or t.dtype != state.dtype:
        with torch.no_grad():
            t.data = t.data.to(device=state.device, dtype=state.dtype)


PreHook = Callable[[str, nn.Module, tuple, dict], "tuple[tuple, dict] | None"]
PostHook = Callable[[str, nn.Module, tuple, dict, object, "BaseException | None"], object]


@contextlib.contextmanager
def module_hooks(
    model: nn.Module,
    *,
    pre: PreHook | None = None,
    post: PostHook | None = None,
    modules: list[tuple[str, nn.Module]] | None = None,
    replaces: bool = False,
) -> Iterator[None]:
    """Call ``pre(name, module, args, kwargs)`` and ``post(name, module, args, kwargs, output, error)`` around
    every module's forward, and remove both on exit.

    ``post`` runs even when the module's forward raises: ``output`` is then None and ``error`` the exception
    being propagated (torch calls ``always_call`` hooks from inside its ``except`` block). Return values are
    ignored unless ``replaces=True``: then, as with torch's own hooks, a non-None value replaces the inputs
    (``pre``: an ``(args, kwargs)`` pair) or the output.
    """
    if modules is None:
        modules = [(v.name, v.module) for v in visits(model) if v.first]
    with contextlib.ExitStack() as stack:
        for name, module in modules:
            if pre is not None:
                stack.enter_context(
                    module.register_forward_pre_hook(_bind_pre(pre, name, replaces), with_kwargs=True)
                )
            if post is not None:
                stack.enter_context(
                    module.register_forward_hook(_bind_post(post, name, replaces), with_kwargs=True, always_call=True)
                )
        yield


def _bind_pre(fn: PreHook, name: str, replaces: bool):
    def hook(module, args, kwargs):
        result = fn(name, module, args, kwargs)
        return result if replaces else None

    return hook


def _bind_post(fn: PostHook, name: str, replaces: bool):
    def hook(module, args, kwargs, output):
        error = sys.exc_info()[1] if output is None else None
        result = fn(name, module, args, kwargs, output, error)
        return result if replaces else None

    return hook
