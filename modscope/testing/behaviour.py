"""Assertions about what a model does when run: output shapes, determinism, side effects of a function.

Forward passes run in eval mode under ``torch.no_grad()`` with a seeded RNG; the model's modes, hooks, grads
and requires_grad flags are restored afterwards (``modscope.collect.hooks.preserved_state``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from modscope.collect.hooks import preserved_state
from modscope.testing._compare import describe, fail, leaf_differences, tensor_difference, truncated
from modscope.testing._model import captured, named_tensors, run_forward

Shape = Sequence["int | None"]


def assert_output_shape(model: nn.Module, inputs: Any, shape: Any) -> Any:
    """The forward output has ``shape``; ``None`` matches any size (e.g. the batch dimension).

    For several outputs give a tuple of shapes (tuple/list outputs) or a dict of shapes (dict outputs).
    ``inputs``: a tensor, a tuple of positional inputs, a dict of keyword inputs or ``ModelInputs``.
    Returns the output.

    >>> assert_output_shape(resnet18(), torch.randn(2, 3, 224, 224), (None, 1000))
    >>> assert_output_shape(two_heads, images, ((1, 10), (1, 4)))
    """
    __tracebackhide__ = True
    output = run_forward(model, inputs)
    problems = _shape_problems(output, shape, "output")
    if problems:
        fail(f"{type(model).__name__} output does not have the expected shape (got {describe(output)})", problems)
    return output


def assert_deterministic(
    model: nn.Module, inputs: Any, *, runs: int = 2, seed: int = 0, rtol: float = 0.0, atol: float = 0.0
) -> None:
    """``runs`` forward passes with the same inputs and RNG seed give the same outputs (bit for bit unless
    ``rtol``/``atol``). On failure, names the first module whose output differed.

    >>> assert_deterministic(model.cuda(), x.cuda())   # catches non-deterministic kernels, stateful forwards
    """
    __tracebackhide__ = True
    with preserved_state(model, carry=True):  # each run sees what the last one changed; all put back after
        first = captured(run_forward(model, inputs, seed=seed))  # copies: a later run cannot change them in place
        for run in range(2, runs + 1):
            problems = leaf_differences(first, captured(run_forward(model, inputs, seed=seed)), rtol=rtol, atol=atol)
            if problems:
                shown = truncated(problems, 8) + _first_divergence(model, inputs, seed, rtol, atol)
                break
        else:
            return
    headline = f"{type(model).__name__} is not deterministic: run {run} differs from run 1 (seed {seed})"
    fail(headline, shown, limit=len(shown))


def assert_unchanged_by(model: nn.Module, fn: Callable[[nn.Module], Any]) -> Any:
    """``fn(model)`` leaves every parameter and buffer as it was: same names, tensor objects, shapes, dtypes,
    devices, requires_grad and values (bit for bit). Returns what ``fn`` returned.

    >>> metrics = assert_unchanged_by(model, lambda m: evaluate(m, val_loader))   # no BatchNorm stat updates
    """
    __tracebackhide__ = True
    before = named_tensors(model)
    copies = {id(t): (t.detach().clone(), t.requires_grad, t.device) for t in before.values()}  # tied: one copy
    result = fn(model)
    after = named_tensors(model)
    problems = [f"{name}: removed" for name in before if name not in after]
    problems += [f"{name}: added" for name in after if name not in before]
    checked: set[int] = set()
    for name, obj in before.items():
        now = after.get(name)
        if now is None or (now is obj and id(obj) in checked):
            continue  # gone (reported above), or a second name of a tensor already compared
        checked.add(id(obj))
        value, requires_grad, device = copies[id(obj)]
        changes = []
        if now is not obj:
            changes.append("replaced by another tensor object")
        if now.device != device:
            changes.append(f"moved {device} -> {now.device}")
        if now.requires_grad != requires_grad:
            changes.append(f"requires_grad {requires_grad} -> {now.requires_grad}")
        how = tensor_difference(value, now.detach())
        if how is not None:
            changes.append(how)
        if changes:
            problems.append(f"{name}: {'; '.join(changes)}")
    if problems:
        what = getattr(fn, "__qualname__", None) or repr(fn)
        fail(f"{what} changed {len(problems)} of {len(copies)} parameters/buffers of {type(model).__name__}", problems)
    return result


def _shape_problems(value: Any, spec: Any, path: str) -> list[str]:
    if _is_shape(spec):
        if not isinstance(value, torch.Tensor):
            return [f"{path}: got {describe(value)}, expected a tensor of shape {_shape_str(spec)}"]
        got = tuple(value.shape)
        if len(got) != len(spec) or any(want is not None and want != size for want, size in zip(spec, got)):
            return [f"{path}: shape {got}, expected {_shape_str(spec)}"]
        return []
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{path}: got {describe(value)}, expected a dict with keys {sorted(spec)}"]
        problems = [f"{path}: missing key {k!r}" for k in spec if k not in value]
        problems += [f"{path}: unexpected key {k!r}" for k in value if k not in spec]
        for key in spec:
            if key in value:
                problems += _shape_problems(value[key], spec[key], f"{path}[{key!r}]")
        return problems
    if isinstance(spec, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(spec):
            return [f"{path}: got {describe(value)}, expected {len(spec)} outputs"]
        return [p for i, (v, s) in enumerate(zip(value, spec)) for p in _shape_problems(v, s, f"{path}[{i}]")]
    raise TypeError(f"expected shape {spec!r}: give a tuple of ints/None, a tuple of such shapes, or a dict of them")


def _is_shape(spec: Any) -> bool:
    return isinstance(spec, torch.Size) or (
        isinstance(spec, (tuple, list)) and all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in spec)
    )


def _shape_str(spec: Shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in spec) + ("," if len(spec) == 1 else "") + ")"


def _first_divergence(model: nn.Module, inputs: Any, seed: int, rtol: float, atol: float) -> list[str]:
    """Re-run twice recording every module call's output; name the first call (in call order) that differs."""
    calls: list[list[tuple[str, str, dict]]] = [[], []]
    for record in calls:

        def post(name, module, args, kwargs, output, error, record=record):
            record.append((name, type(module).__name__, captured(output)))

        run_forward(model, inputs, seed=seed, post=post)
    for step, ((name_a, kind, out_a), (name_b, _, out_b)) in enumerate(zip(*calls)):
        label = name_a or "(root)"
        if name_a != name_b:
            return [f"the runs took different paths: call {step + 1} was {label} in run 1, {name_b or '(root)'} in run 2"]
        problems = leaf_differences(out_a, out_b, rtol=rtol, atol=atol)
        if problems:
            return [f"first module whose output differs: {label} ({kind}), module call {step + 1}: {problems[0]}"]
    return []

