"""Model inputs: CLI specs (``1,3,224,224:float16``, ``1,128:int64[0,32000)``) and Python values.

Shape specs are comma-separated sizes with an optional ``:dtype``; integer and bool dtypes may take a
half-open value range ``[low,high)`` (default ``[0,2)``) so token models get valid ids. Floating tensors
are standard normal. Values come from a fixed seed so runs are repeatable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from modscope.errors import UsageError

_SPEC = re.compile(r"^\s*(?P<shape>[0-9,\s]*?)\s*(?::\s*(?P<dtype>[a-z0-9_.]+)\s*(?P<range>\[[^\]]*\)|\[[^\]]*\])?)?\s*$")
_SEED = 0


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    low: int = 0
    high: int = 2

    def make(self, device: str | torch.device = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        device = torch.device(device)
        gen = generator if device.type == "cpu" else None
        if self.dtype.is_floating_point or self.dtype.is_complex:
            return torch.randn(self.shape, dtype=self.dtype, device=device, generator=gen)
        values = torch.randint(self.low, self.high, self.shape, dtype=torch.int64, device=device, generator=gen)
        return values.to(self.dtype)


@dataclass
class ModelInputs:
    """Positional and keyword arguments for one forward call."""

    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def call(self, model):
        return model(*self.args, **self.kwargs)

    def to(self, device: str | torch.device) -> "ModelInputs":
        return ModelInputs(_map_tensors(self.args, device), _map_tensors(self.kwargs, device))


def parse_tensor_spec(text: str) -> TensorSpec:
    """'1,3,224,224' / '2,20:float16' / '1,128:int64[0,32000)' -> TensorSpec."""
    match = _SPEC.match(text)
    if not match or not match.group("shape").strip(" ,"):
        raise UsageError(f"input spec {text!r}: expected SHAPE[:DTYPE], e.g. 1,3,224,224 or 1,128:int64[0,32000)")
    try:
        shape = tuple(int(part) for part in match.group("shape").split(",") if part.strip())
    except ValueError:
        raise UsageError(f"input spec {text!r}: sizes must be integers")
    dtype = torch.float32
    if match.group("dtype"):
        from modscope.static import parse_dtype

        dtype = parse_dtype(match.group("dtype"))
    low, high = 0, 2
    if match.group("range"):
        if dtype.is_floating_point or dtype.is_complex:
            raise UsageError(f"input spec {text!r}: a value range applies to integer dtypes only")
        low, high = _parse_range(text, match.group("range"))
    return TensorSpec(shape, dtype, low, high)


def _parse_range(text: str, raw: str) -> tuple[int, int]:
    body = raw[1:-1]
    try:
        low, high = (int(x) for x in body.split(","))
    except ValueError:
        raise UsageError(f"input spec {text!r}: range must look like [low,high)")
    if raw.endswith("]"):
        high += 1  # [0,9] is inclusive
    if high <= low:
        raise UsageError(f"input spec {text!r}: empty value range {raw}")
    return low, high


def build_inputs(
    positional: Iterable[str] = (),
    keyword: Iterable[str] = (),
    factory: str | None = None,
    *,
    device: str | torch.device = "cpu",
) -> ModelInputs | None:
    """CLI options -> ModelInputs (None when no input was given).

    ``positional``: specs for positional inputs; ``keyword``: ``name=SPEC``; ``factory``:
    ``file.py:make_inputs``, a callable returning a tensor, tuple or dict (tensors are moved to ``device``).
    """
    positional, keyword = list(positional), list(keyword)
    if factory and (positional or keyword):
        raise UsageError("--inputs replaces --input/--kwarg: give one or the other")
    if factory:
        return as_model_inputs(_call_factory(factory)).to(device)
    if not positional and not keyword:
        return None
    generator = torch.Generator().manual_seed(_SEED)
    args = tuple(parse_tensor_spec(spec).make(device, generator) for spec in positional)
    kwargs = {}
    for item in keyword:
        name, eq, spec = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"--kwarg {item!r}: expected name=SHAPE[:DTYPE]")
        kwargs[name.strip()] = parse_tensor_spec(spec).make(device, generator)
    return ModelInputs(args, kwargs)


def as_model_inputs(value: Any) -> ModelInputs:
    """A tensor, tuple/list (positional), dict (keyword) or ModelInputs -> ModelInputs."""
    if isinstance(value, ModelInputs):
        return value
    if isinstance(value, dict):
        return ModelInputs((), dict(value))
    if isinstance(value, (tuple, list)):
        return ModelInputs(tuple(value), {})
    return ModelInputs((value,), {})


def _call_factory(spec: str):
    from modscope.load import is_object_spec, resolve_object

    if not is_object_spec(spec):
        raise UsageError(f"--inputs {spec!r}: expected file.py:function or package.module:function")
    fn = resolve_object(spec)
    if not callable(fn):
        raise UsageError(f"--inputs {spec!r} is a {type(fn).__name__}, not a callable")
    try:
        return fn()
    except Exception as exc:
        raise UsageError(f"--inputs {spec!r} raised {type(exc).__name__}: {exc}")


def _map_tensors(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, device) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, device) for k, v in value.items()}
    return value
