"""Comparing and describing values for assertion messages: nested outputs, tensors, long listings.

Pure functions over tensors and plain containers; nothing here touches a model.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any, Iterator

import torch

from modscope.collect.forward.structure import describe as describe_structure
from modscope.collect.static.tensors import dtype_name
from modscope.render.structure_text import structure_str

MAX_LINES = 10


def fail(headline: str, details: list[str] = (), *, limit: int = MAX_LINES) -> None:
    """Raise AssertionError: a headline, then at most ``limit`` indented detail lines."""
    __tracebackhide__ = True
    lines = [headline] + ["  " + line for line in truncated(list(details), limit)]
    raise AssertionError("\n".join(lines))


def plain_text(renderable, width: int = 120) -> list[str]:
    """A report's rich view as plain lines (no colour), as ``modscope`` would print it."""
    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, soft_wrap=True)
    console.print(renderable)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def truncated(lines: list[str], limit: int = MAX_LINES) -> list[str]:
    if len(lines) <= limit:
        return lines
    return lines[: limit - 1] + [f"... and {len(lines) - limit + 1} more"]


def listing(names, limit: int = 5) -> str:
    """'a, b, c, d, e and 7 more'."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def leaves(value: Any, path: str = "output") -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs of a nested output: ``output[0]``, ``output['logits']``, ``output.hidden``."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):  # also ModelOutput-style dict subclasses
        for key, item in value.items():
            yield from leaves(item, f"{path}[{key!r}]")
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        for key, item in zip(value._fields, value):
            yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from leaves(getattr(value, f.name), f"{path}.{f.name}")
    else:
        yield path, value


def describe(value: Any) -> str:
    """A short structural description: ``2x1000``, ``(2x10, 2x4)``, ``{logits: 1x10, embedding: 1x32}``."""
    return structure_str(describe_structure(value))


def tensor_difference(a: torch.Tensor, b: torch.Tensor, *, rtol: float = 0.0, atol: float = 0.0) -> str | None:
    """None when ``a`` and ``b`` match (NaN equals NaN), else one line saying how they differ."""
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.dtype != b.dtype:
        return f"dtype {dtype_name(a.dtype)} vs {dtype_name(b.dtype)}"
    if a.is_meta or b.is_meta:
        return None  # no values to compare
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_floating_point() or a.is_complex():
        same = torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    else:
        same = a == b
    differ = int(same.numel() - same.sum())
    if not differ:
        return None
    wide = torch.complex128 if a.is_complex() else torch.float64
    gap = (a.to(wide) - b.to(wide)).abs().masked_fill(same, 0).nan_to_num(nan=float("inf"))
    flat = int(gap.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
    where = f" at {list(index)}" if index else ""
    return (
        f"{differ:,} of {a.numel():,} elements differ, max |diff| {float(gap.reshape(-1)[flat]):.3g}{where}"
        f" ({_item(a, index)} vs {_item(b, index)})"
    )


def value_differences(a: Any, b: Any, *, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
    """``path: how`` for every leaf where two nested outputs differ (structure, shapes, dtypes, values)."""
    left, right = dict(leaves(a)), dict(leaves(b))
    if left.keys() != right.keys():
        return [f"output structure differs: {describe(a)} vs {describe(b)}"]
    return leaf_differences(left, right, rtol=rtol, atol=atol)


def leaf_differences(left: dict[str, Any], right: dict[str, Any], *, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
    """``path: how`` for every path whose leaf differs between two ``leaves`` mappings."""
    if left.keys() != right.keys():
        return [f"output structure differs: {', '.join(left)} vs {', '.join(right)}"]
    out = []
    for path, x in left.items():
        y = right[path]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            how = tensor_difference(x, y, rtol=rtol, atol=atol)
        else:
            how = None if _plain_equal(x, y) else f"{x!r} vs {y!r}"
        if how is not None:
            out.append(f"{path}: {how}")
    return out


def _plain_equal(x: Any, y: Any) -> bool:
    try:
        return bool(x == y) or (x != x and y != y)  # NaN floats compare equal here
    except Exception:
        return x is y


def _item(t: torch.Tensor, index: tuple) -> str:
    value = t[index].item() if index else t.item()
    return f"{value:.6g}" if isinstance(value, float) else str(value)
