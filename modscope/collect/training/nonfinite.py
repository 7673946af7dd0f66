"""NaN/Inf tracing: the first module whose forward output is non-finite, and the first non-finite gradient in
backward, at a small fraction of the cost of ``torch.autograd.detect_anomaly``.

How it stays cheap: every check is one ``torch.aminmax`` reduction whose result stays on the device (NaN
propagates through min/max, and +Inf/-Inf show up as the max/min, so the check is exact); the results reach
the host in one transfer at the end of each forward pass (root module's forward hook) and each backward pass
(at the next forward, ``report()`` or exit). Only the first offending module is then examined in detail.
To describe its inputs, the detector holds references to each module call's input and output tensors until
the forward pass returns (about the memory a training forward keeps anyway).

Backward checks are tensor hooks, never full backward module hooks (which break on in-place ops): on each
module's inputs (registered before the call, so in-place modules are seen correctly), on its outputs and on
the parameters. A gradient seen first at a module's input was made non-finite by that module's backward; one
seen first at a module's output came from downstream code outside any submodule (the parent's forward or the
loss).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import weakref
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Iterator

import torch
import torch.nn as nn

from modscope.collect.graph_release import graph_nodes, release
from modscope.collect.hooks import module_hooks, preserved_state
from modscope.collect.recursion import recursion_note, recursion_room
from modscope.collect.static.tensors import dtype_name, trainable_parameters
from modscope.collect.training.loss import Loss, LossKind, loss_kind, loss_label, make_loss
from modscope.collect.training.scalars import host_floats
from modscope.core.walk import copy_if_lazy, visits
from modscope.errors import ForwardError, UsageError
from modscope.load.inputs import as_model_inputs
from modscope.load.input_errors import explain
from modscope.reports.nonfinite import NonfiniteEvent, NonfiniteReport, Origin, TensorStats
from modscope.reports.static import ModelRef


def detect_nonfinite(
    model: nn.Module, *, forward: bool = True, backward: bool = True, name: str | None = None
) -> "NonfiniteDetector":
    """Watch ``model`` for the first NaN/Inf in forward outputs and in gradients while the block runs.

    >>> with modscope.detect_nonfinite(model) as det:
    ...     loss_fn(model(x), y).backward()
    >>> det.report().forward      # None, or where the first NaN/Inf appeared, with its inputs' statistics
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return NonfiniteDetector(model, check_forward=forward, check_backward=backward, name=name)


def find_nonfinite(
    model: nn.Module,
    inputs: Any,
    *,
    loss: Loss = LossKind.MEAN,
    target: torch.Tensor | None = None,
    backward: bool = True,
    name: str | None = None,
) -> NonfiniteReport:
    """One forward pass, loss and (unless ``backward=False``) backward pass under ``detect_nonfinite``.

    Leaves ``.grad`` untouched (``torch.autograd.grad``) and restores modes, buffers and RNG state.

    >>> modscope.find_nonfinite(model, torch.randn(4, 16)).ok
    """
    inputs = as_model_inputs(inputs)
    model = copy_if_lazy(model)  # a lazy model's first forward would materialise it in place
    kind = loss_kind(loss)
    error = None
    loss_value = None
    output = loss_tensor = None
    depth = max(v.depth for v in visits(model))
    with preserved_state(model), torch.enable_grad(), recursion_room(depth):
        with detect_nonfinite(model, backward=backward, name=name) as detector:
            try:
                output = inputs.call(model)
            except Exception as exc:
                error, output = f"{explain(exc, model)}{recursion_note(exc, depth)}", None
            if output is not None:
                loss_tensor = make_loss(output, kind, target)
                if loss_tensor is not None:
                    loss_value = float(loss_tensor.detach())
                    params = [tensor for _, tensor in trainable_parameters(model)]
                    if backward and params and loss_tensor.requires_grad:
                        torch.autograd.grad(loss_tensor, params, allow_unused=True)
        report = detector.report()
    nodes = graph_nodes((output, loss_tensor))  # the hooks looked at this graph: free it node by node
    del output, loss_tensor
    release(nodes)
    if error is not None and report.forward is None:
        raise ForwardError(f"the model's forward raised {error}")
    return replace(report, loss=loss_label(kind), loss_value=loss_value, error=error)


@dataclass
class _Call:
    """One module call of the current forward pass, kept until the pass ends."""

    module: str
    call: int
    inputs: list[tuple[str, torch.Tensor, int]]  # (label, tensor, version when the call began)
    outputs: list[tuple[str, torch.Tensor, int]] = field(default_factory=list)
    extrema: list[torch.Tensor] = field(default_factory=list)  # min, max of each checked output, on device


@dataclass(frozen=True)
class _Role:
    """One way a tensor takes part in a module call."""

    kind: str  # "input" | "output" | "param"
    module: str
    label: str


@dataclass
class _Grad:
    """One gradient seen in backward, and every role its tensor plays (one check per tensor and pass)."""

    roles: list[_Role]
    call: int
    extrema: tuple[torch.Tensor, torch.Tensor]


class NonfiniteDetector:
    """The live side of ``detect_nonfinite``: hooks while inside ``with``, then ``report()``."""

    def __init__(self, model: nn.Module, *, check_forward: bool, check_backward: bool, name: str | None):
        self.model = model
        self.name = name
        self.check_backward = check_backward
        self._forward_on = check_forward
        self._backward_on = check_backward
        self._forward_event: NonfiniteEvent | None = None
        self._backward_event: NonfiniteEvent | None = None
        self._passes = 0
        self._open: list[_Call] = []  # calls begun and not yet returned (a stack: calls nest)
        self._done: list[_Call] = []  # calls returned in this pass, in completion order
        self._grads: list[_Grad] = []
        self._keys: dict[int, tuple[weakref.ref, int]] = {}
        # per pass, keyed by (tensor, version): an in-place op makes a new value that is checked again
        self._checked: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._roles: dict[tuple[int, int], list[_Role]] = {}
        self._counter = itertools.count()
        self._leaf_handles: list = []
        self._types: dict[str, str] = {}
        self._exit: contextlib.ExitStack | None = None

    # --- context -----------------------------------------------------------------------------------------

    def __enter__(self) -> "NonfiniteDetector":
        if self._exit is not None or self._passes or self._types:
            raise UsageError("a detector is entered once: call detect_nonfinite() again for another block")
        visited = visits(self.model)
        self._types = {v.name: type(v.module).__name__ for v in visited if v.first}
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(module_hooks(self.model, pre=self._pre, post=self._post))
            if self.check_backward:
                for info, tensor in trainable_parameters(self.model):
                    hook = partial(self._on_grad, [_Role("param", info.module, info.name)], None)
                    stack.enter_context(tensor.register_hook(hook))
            stack.callback(self._remove_leaf_handles)
        except BaseException:
            stack.close()
            raise
        self._exit = stack
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._resolve_forward()
            self._resolve_backward()
        finally:
            self._forward_on = self._backward_on = False  # hooks left on live graphs become no-ops
            self._open, self._done, self._grads = [], [], []
            stack, self._exit = self._exit, None
            if stack is not None:
                stack.close()

    def _remove_leaf_handles(self) -> None:
        handles, self._leaf_handles = self._leaf_handles, []
        for handle in handles:
            handle.remove()

    @property
    def found(self) -> bool:
        """True once a non-finite value has been seen (resolves pending checks: one host sync)."""
        return not self.report().ok

    def report(self) -> NonfiniteReport:
        """What was found so far; callable inside or after the ``with`` block."""
        if not self._open:
            self._resolve_forward()
        self._resolve_backward()
        return NonfiniteReport(
            model=ModelRef(type(self.model).__name__, self.name),
            forward=self._forward_event,
            backward=self._backward_event,
            forward_passes=self._passes,
            checked_backward=self.check_backward,
        )

    # --- forward hooks -----------------------------------------------------------------------------------

    def _pre(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is self.model:
            self._passes += 1
            self._resolve_backward()
            self._remove_leaf_handles()  # the previous pass's backward is over
        inputs = list(_labelled(args, "input")) + list(_labelled(kwargs, "kwarg"))
        held = [(label, t, _version(t)) for label, t in inputs] if self._forward_on else []
        self._open.append(_Call(name, self._passes, held))
        if self._backward_on and torch.is_grad_enabled():
            for label, t in inputs:
                if t.requires_grad:
                    self._watch_grad("input", name, label, t)

    def _post(self, name: str, module: nn.Module, args, kwargs, output, error) -> None:
        call = self._open.pop() if self._open else None
        outputs = list(_labelled(output, "output")) if output is not None else []
        if self._forward_on and call is not None:
            call.outputs = [(label, t, _version(t)) for label, t in outputs]
            for _, t in outputs:
                if _checkable(t):
                    call.extrema.extend(self._extrema(t))
            self._done.append(call)
        if self._backward_on and torch.is_grad_enabled():
            for label, t in outputs:
                if t.requires_grad:
                    self._watch_grad("output", name, label, t)
        if module is self.model:
            self._resolve_forward()
            self._keys.clear()
            self._checked.clear()
            self._roles.clear()

    # --- backward hooks ----------------------------------------------------------------------------------

    def _extrema(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """min and max of ``tensor`` on its device, computed once per value (a container's output is
        usually its last child's)."""
        slot = (self._key(tensor), _version(tensor))
        found = self._checked.get(slot)
        if found is None:
            found = self._checked[slot] = tuple(torch.aminmax(_real(tensor.detach())))
        return found

    def _watch_grad(self, kind: str, module: str, label: str, tensor: torch.Tensor) -> None:
        slot = (self._key(tensor), _version(tensor))
        roles = self._roles.get(slot)
        if roles is not None:  # this gradient is already watched: one more role for it
            roles.append(_Role(kind, module, label))
            return
        roles = self._roles[slot] = [_Role(kind, module, label)]
        handle = tensor.register_hook(partial(self._on_grad, roles, self._passes))
        if tensor.is_leaf:  # a user's tensor: the hook must not outlive the detector
            self._leaf_handles.append(handle)

    def _key(self, tensor: torch.Tensor) -> int:
        """The same number for the same tensor object within a pass (ids alone may be reused)."""
        entry = self._keys.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            entry = (weakref.ref(tensor), next(self._counter))
            self._keys[id(tensor)] = entry
        return entry[1]

    def _on_grad(self, roles: list[_Role], call: int | None, grad) -> None:
        if self._backward_on and grad is not None and _checkable(grad):
            extrema = torch.aminmax(_real(grad.detach()))
            self._grads.append(_Grad(roles, self._passes if call is None else call, extrema))

    # --- resolution (one host transfer each) --------------------------------------------------------------

    def _resolve_forward(self) -> None:
        calls, self._done = self._done, []
        if not self._forward_on or not calls:
            return
        values = iter(host_floats([x for c in calls for x in c.extrema]))
        bad = []
        for c in calls:
            extrema = [next(values) for _ in c.extrema]
            if not all(math.isfinite(v) for v in extrema):
                bad.append((c, extrema))
        if not bad:
            return
        call, extrema = bad[0]
        checked = [(label, t) for label, t, _ in call.outputs if _checkable(t)]
        label = next(checked[i // 2][0] for i, v in enumerate(extrema) if not math.isfinite(v))
        inputs = tuple(_stats(lbl, t, v) for lbl, t, v in call.inputs if _checkable(t))
        self._forward_event = NonfiniteEvent(
            phase="forward",
            module=call.module,
            type=self._types.get(call.module, "?"),
            call=call.call,
            tensor=label,
            origin=Origin.INPUT if any(s.nonfinite for s in inputs) else Origin.MODULE,
            inputs=inputs,
            outputs=tuple(_stats(lbl, t, v) for lbl, t, v in call.outputs if _checkable(t)),
            later=len(bad) - 1,
        )
        self._forward_on = False

    def _resolve_backward(self) -> None:
        grads, self._grads = self._grads, []
        if not self._backward_on or not grads:
            return
        values = host_floats([x for g in grads for x in g.extrema])
        bad = [i for i in range(len(grads)) if not (math.isfinite(values[2 * i]) and math.isfinite(values[2 * i + 1]))]
        if not bad:
            return
        first = grads[bad[0]]
        low, high = values[2 * bad[0]], values[2 * bad[0] + 1]
        role, origin = first.roles[0], Origin.MODULE
        if role.kind != "param":
            consumers = [r for r in first.roles if r.kind == "input"]
            if consumers:  # a module consumed this tensor: its backward made the gradient non-finite
                role = consumers[0]
            else:  # code outside submodules did; name the outermost module that returned this tensor
                role, origin = [r for r in first.roles if r.kind == "output"][-1], Origin.DOWNSTREAM
        module, label = role.module, role.label if role.kind == "param" else f"grad of {role.label}"
        self._backward_event = NonfiniteEvent(
            phase="backward",
            module=module,
            type=self._types.get(module, "?"),
            call=first.call,
            tensor=label,
            origin=origin,
            min=low,
            max=high,
            later=len(bad) - 1,
        )
        self._backward_on = False


def _labelled(value: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, tensor) for every tensor in a nest of tuples/lists/dicts: "input 0", "output[1]", "kwarg mask"."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _labelled(v, f"{prefix} {k}" if prefix == "kwarg" else f"{prefix}[{k!r}]")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _labelled(v, f"{prefix} {i}" if prefix == "input" else f"{prefix}[{i}]")


def _checkable(t: torch.Tensor) -> bool:
    return (t.is_floating_point() or t.is_complex()) and t.numel() > 0 and t.layout == torch.strided


def _version(t: torch.Tensor) -> int:
    """In-place modification counter (inference-mode tensors have none: -1)."""
    return -1 if t.is_inference() else t._version


def _real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _stats(label: str, tensor: torch.Tensor, version: int) -> TensorStats:
    t = _real(tensor.detach()).float()
    finite = torch.isfinite(t)
    values = t[finite]
    counts = torch.stack([torch.isnan(t).sum(), torch.isposinf(t).sum(), torch.isneginf(t).sum()]).tolist()
    extrema = torch.stack([values.min(), values.max(), values.mean()]).tolist() if values.numel() else [None] * 3
    return TensorStats(
        label=label,
        shape=tuple(tensor.shape),
        dtype=dtype_name(tensor.dtype),
        min=extrema[0],
        max=extrema[1],
        mean=extrema[2],
        nan=counts[0],
        posinf=counts[1],
        neginf=counts[2],
        changed_in_place=_version(tensor) != version,
    )
