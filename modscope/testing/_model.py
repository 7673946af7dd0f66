"""Running and reading a live model for the assertions, leaving it as it was found."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from modscope.collect.forward.run import run_pass
from modscope.collect.hooks import module_hooks
from modscope.core.walk import join, visits
from modscope.load.inputs import as_model_inputs
from modscope.testing._compare import leaves

PostHook = Callable[[str, nn.Module, tuple, dict, Any, "BaseException | None"], None]


def run_forward(model: nn.Module, inputs: Any, *, seed: int = 0, post: PostHook | None = None) -> Any:
    """One forward pass in eval mode under ``torch.no_grad()`` with the torch RNG seeded to ``seed``, through
    ``modscope.collect.forward.run.run_pass``: modes, hooks, grads, buffer values and the global RNG state are
    restored afterwards. ``post`` is called after every module's forward (see ``module_hooks``).

    The model's own errors propagate.
    """
    extra = None if post is None else (lambda _counter: module_hooks(model, post=post))
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        result = run_pass(model, as_model_inputs(inputs), flops=False, record=False, extra=extra)
    if result.error is not None:
        raise result.error
    return result.output


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (non-persistent ones too) under every name it is reachable by."""
    out: dict[str, torch.Tensor] = {}
    for visit in visits(model):
        for key, tensor in (*visit.module._parameters.items(), *visit.module._buffers.items()):
            if tensor is not None:
                out[join(visit.name, key)] = tensor
    return out


def captured(value: Any, path: str = "output") -> dict[str, Any]:
    """The leaves of a nested output (see ``leaves``), tensors detached and cloned so that later in-place
    operations cannot change them."""
    return {p: v.detach().clone() if isinstance(v, torch.Tensor) else v for p, v in leaves(value, path)}


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
