"""Forward-pass structures as short text: ``1x3x224x224``, ``(1x10, 1x4)``, ``{logits: 1x10}``, calls."""
from __future__ import annotations

from modscope.core.text import shape_str
from modscope.reports.forward import Opaque, Record, TensorMeta


def structure_str(value, limit: int | None = None) -> str:
    """A forward-pass Structure as short text: '1x3x224x224', '1x128 int64', '(1x10, 1x4)', '{logits: 1x10}'."""
    if isinstance(value, TensorMeta):
        text = shape_str(value.shape) + ("" if value.dtype == "float32" else f" {value.dtype}")
    elif isinstance(value, Record):
        text = f"{value.type}({', '.join(f'{k}={structure_str(v)}' for k, v in value.fields.items())})"
    elif isinstance(value, Opaque):
        text = value.repr or f"<{value.type}>"
    elif isinstance(value, tuple):
        text = f"({', '.join(structure_str(v) for v in value)}{',' if len(value) == 1 else ''})"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {structure_str(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if limit is None else clip(text, limit)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters with a closing '…', at a space or comma so no number is split.

    >>> clip("(1x3x224x224, 1x10)", 16)
    '(1x3x224x224, …'
    """
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    at = max(head.rfind(" "), head.rfind(","))
    return (head[: at + 1] if at > 0 else head) + "…"


def call_str(args, kwargs) -> str:
    """Positional and keyword Structures of one call: '2x20, mask=2x16 bool'."""
    parts = [structure_str(a) for a in args] + [f"{k}={structure_str(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)
