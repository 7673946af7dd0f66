"""The one place where modscope touches a live model: hooks and state, always restored.

``preserved_state`` snapshots everything an analysis could disturb (train/eval flags, requires_grad, .grad,
device and dtype of every tensor, buffer values such as BatchNorm running statistics, the random number
generators a forward pass draws from, the model's hook tables) and puts it back on exit, even when the
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
    value: torch.Tensor | None = None  # buffers only: a copy, written back in place on exit


@contextlib.contextmanager
def preserved_state(
    model: nn.Module, *, rng_devices: tuple = (), modules: list[nn.Module] | None = None
) -> Iterator[nn.Module]:
    """Restore modes, requires_grad, .grad, devices/dtypes, buffer values, RNG state and hook tables on exit.

    The CPU generator and the CUDA generators of the devices the model's tensors are on are restored, plus
    those of ``rng_devices`` (for an analysis that moves the model to a GPU), so dropout in an analysed
    forward pass does not shift the user's random stream. ``modules``: every module of ``model`` once, when
    the caller has already walked it.
    """
    if modules is None:
        modules = [v.module for v in visits(model) if v.first]
    modes = [(m, m.training) for m in modules]
    # model.to()/.double() put *new* tensor objects into _buffers (and into _parameters when torch is set to
    # overwrite parameters on conversion): the tables are put back as they were, so the user's objects and
    # ties between modules survive a move for the pass.
    # (TorchScript modules expose read-through wrappers instead of dicts; .to() keeps their objects.)
    tables = [(t, dict(t)) for m in modules for t in (m._parameters, m._buffers) if isinstance(t, dict)]
    hook_keys = [(m, name, set(getattr(m, name, {}).keys())) for m in modules for name in _HOOK_TABLES]
    tensors: dict[int, _TensorState] = {}
    for m in modules:
        for t in m._parameters.values():
            if t is not None and id(t) not in tensors:
                tensors[id(t)] = _TensorState(t, t.requires_grad, t.grad, t.device, t.dtype)
        for t in m._buffers.values():
            if t is not None and id(t) not in tensors:
                value = None if t.is_meta or is_lazy(t) else t.detach().clone()
                tensors[id(t)] = _TensorState(t, t.requires_grad, t.grad, t.device, t.dtype, value)
    cuda = {torch.device(d) for d in rng_devices} | {s.device for s in tensors.values()}
    cuda_indices = sorted({d.index or 0 for d in cuda if d.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda_indices):
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for table, saved in tables:
            if len(table) != len(saved) or any(table.get(k) is not v for k, v in saved.items()):
                table.clear()
                table.update(saved)
        for m, name, keys in hook_keys:
            table = getattr(m, name, None)
            if table is not None:
                for key in [k for k in table if k not in keys]:
                    del table[key]
        for state in tensors.values():
            _restore_tensor(state)


def _restore_tensor(state: _TensorState) -> None:
    t = state.tensor
    if t.is_leaf and t.requires_grad != state.requires_grad:
        t.requires_grad_(state.requires_grad)
    if t.device != state.device or t.dtype != state.dtype:
        t.grad = None  # a gradient made on the pass's device/dtype cannot stay while the tensor moves back
        with torch.no_grad():
            t.data = t.data.to(device=state.device, dtype=state.dtype)
    if t.grad is not state.grad:
        t.grad = state.grad
    if state.value is not None and t.shape == state.value.shape:
        with torch.no_grad():
            t.copy_(state.value)


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
