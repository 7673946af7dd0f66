"""Model inputs: CLI specs (``1,3,224,224:float16``, ``1,128:int64[0,32000)``) and Python values.

Shape specs are comma-separated sizes with an optional ``:dtype``; integer and bool dtypes may take a
half-open value range ``[low,high)`` (default ``[0,2)``) so token models get valid ids. Floating tensors
are standard normal. Values come from a fixed seed so runs are repeatable.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from modscope.core.nest import map_tensors
from modscope.errors import UsageError, label_user_exit, what_user_code_did

_SPEC = re.compile(r"^\s*(?P<shape>[-+0-9,\s]*?)\s*(?::\s*(?P<dtype>[a-z0-9_.]+)\s*(?P<range>\[[^\]]*\)|\[[^\]]*\])?)?\s*$")
_SEED = 0
#: on --device meta, specs up to this size are drawn on CPU (real values), bigger ones made on meta
META_REAL_MAX_BYTES = 16 << 20


def parse_dtype(text: str) -> torch.dtype:
    """'bfloat16' / 'torch.float16' / 'fp32' -> torch dtype."""
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "half": "float16"}
    name = text.removeprefix("torch.")
    name = aliases.get(name, name)
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"{text!r} is not a torch dtype (try float32, bfloat16, float16, int64)")
    return dtype


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    low: int = 0
    high: int = 2

    def make(self, device: str | torch.device = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        device = torch.device(device)
        gen = generator if device.type == "cpu" else None
        _check_fits(self, device)
        try:
            if self.dtype in _CONVERTED:  # no random kernel of their own: drawn in float32, then cast
                return torch.randn(self.shape, device=device, generator=gen).to(self.dtype)
            if self.dtype.is_floating_point or self.dtype.is_complex:
                return torch.randn(self.shape, dtype=self.dtype, device=device, generator=gen)
            values = torch.randint(self.low, self.high, self.shape, dtype=torch.int64, device=device, generator=gen)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            size = _human_bytes(math.prod(self.shape) * self.dtype.itemsize)
            raise UsageError(f"input {_shape_text(self)}: cannot allocate {size} on {device}: {_first_line(exc)}")
        return values.to(self.dtype)


@dataclass
class ModelInputs:
    """Positional and keyword arguments for one forward call."""

    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def call(self, model):
        try:
            return model(*self.args, **self.kwargs)
        except BaseException as exc:  # sys.exit() in a forward: named by the CLI, still raised here
            label_user_exit(exc, "the model's forward")
            raise

    def to(self, device: str | torch.device) -> "ModelInputs":
        """The same arguments on ``device``, every container of its own type (``core.nest.map_tensors``)."""
        args = map_tensors(self.args, lambda t: t.to(device))
        kwargs = map_tensors(self.kwargs, lambda t: t.to(device))
        return ModelInputs(args, kwargs)


def parse_tensor_spec(text: str) -> TensorSpec:
    """'1,3,224,224' / '2,20:float16' / '1,128:int64[0,32000)' -> TensorSpec."""
    match = _SPEC.match(text)
    if not match or not match.group("shape").strip(" ,"):
        shape, colon, rest = text.partition(":")
        if re.fullmatch(r"\s*\d+(\s*[x*×]\s*\d+)+\s*", shape):  # 1x3x224x224: the shape as printed in tables
            fixed = re.sub(r"\s*[x*×]\s*", ",", shape.strip()) + colon + rest
            raise UsageError(f"input spec {text!r}: sizes are separated by commas, as in {fixed}")
        raise UsageError(f"input spec {text!r}: expected SHAPE[:DTYPE], e.g. 1,3,224,224 or 1,128:int64[0,32000)")
    try:
        shape = tuple(int(part) for part in match.group("shape").split(",") if part.strip())
    except ValueError:
        raise UsageError(f"input spec {text!r}: sizes must be integers")
    if any(size < 1 for size in shape):
        raise UsageError(f"input spec {text!r}: every size must be at least 1")
    if math.prod(shape) > _MAX_ELEMENTS:
        raise UsageError(f"input spec {text!r}: {math.prod(shape):,} elements is more than a tensor can hold")
    dtype = torch.float32
    if match.group("dtype"):
        dtype = parse_dtype(match.group("dtype"))
        if dtype not in _GENERATED:
            raise UsageError(
                f"input spec {text!r}: modscope cannot generate {_dtype_name(dtype)} inputs (use one of "
                f"{', '.join(sorted(map(_dtype_name, _GENERATED)))}), or build them in an "
                "--inputs file.py:make_inputs function"
            )
    low, high = 0, 2
    if match.group("range"):
        if dtype.is_floating_point or dtype.is_complex:
            raise UsageError(f"input spec {text!r}: a value range applies to integer dtypes only")
        low, high = _parse_range(text, match.group("range"))
    if not (dtype.is_floating_point or dtype.is_complex):
        info = (0, 1) if dtype == torch.bool else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
        lowest, highest = max(info[0], -(2**63)), min(info[1], 2**63 - 1)
        if low < lowest or high - 1 > highest:
            raise UsageError(
                f"input spec {text!r}: values [{low},{high}) do not fit {_dtype_name(dtype)} (whose values are [{lowest},{highest}])"
            )
    return TensorSpec(shape, dtype, low, high)


#: The dtypes ``--input`` can make: the float8 ones are drawn in float32 and cast (they have no random kernel).
_CONVERTED = frozenset(
    d for d in (getattr(torch, n, None) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"))
    if d is not None
)
_GENERATED = frozenset({
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
    *(d for d in (getattr(torch, n, None) for n in ("uint16", "uint32", "uint64")) if d is not None),
    *_CONVERTED,
})
_MAX_ELEMENTS = 2**63 - 1


def _check_fits(spec: TensorSpec, device: torch.device) -> None:
    """Refuse a CPU input larger than this machine's memory before asking the allocator for it."""
    if device.type != "cpu":
        return  # meta allocates nothing; CUDA reports its own out-of-memory error
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: the allocator will say
        return
    needed = math.prod(spec.shape) * spec.dtype.itemsize
    if needed > memory:
        raise UsageError(
            f"input {_shape_text(spec)} needs {_human_bytes(needed)}, more than this machine's memory "
            f"({_human_bytes(memory)}); use smaller sizes, or --device meta for shapes and FLOPs only"
        )


def _shape_text(spec: TensorSpec) -> str:
    return f"{','.join(map(str, spec.shape))}:{_dtype_name(spec.dtype)}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _human_bytes(count: int) -> str:
    from modscope.core.text import human_bytes

    return human_bytes(count)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_range(text: str, raw: str) -> tuple[int, int]:
    body = raw[1:-1]
    try:
        low, high = (int(x) for x in body.split(","))
    except ValueError:
        raise UsageError(f"input spec {text!r}: range must look like [low,high)")
    if max(abs(low), abs(high)) > 2**63:
        raise UsageError(f"input spec {text!r}: range {raw} does not fit in 64-bit integers")
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
    For ``device="meta"`` the factory's tensors and specs of at most ``META_REAL_MAX_BYTES`` stay real on CPU:
    the meta pass moves them and keeps their values for checks the model makes on them (a mask's ``.all()``).
    """
    positional, keyword = list(positional), list(keyword)
    if factory and (positional or keyword):
        raise UsageError("--inputs replaces --input/--kwarg: give one or the other")
    meta = torch.device(device).type == "meta"
    if factory:  # on meta the values stay real: the meta pass moves them and keeps them for value reads
        given = as_model_inputs(_call_factory(factory))
        return given if meta else given.to(device)
    if not positional and not keyword:
        return None
    generator = torch.Generator().manual_seed(_SEED)

    def make(spec: TensorSpec) -> torch.Tensor:
        small = math.prod(spec.shape) * spec.dtype.itemsize <= META_REAL_MAX_BYTES
        return spec.make("cpu" if meta and small else device, generator)

    args = tuple(make(parse_tensor_spec(spec)) for spec in positional)
    kwargs = {}
    for item in keyword:
        name, eq, spec = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"--kwarg {item!r}: expected name=SHAPE[:DTYPE]")
        kwargs[name.strip()] = make(parse_tensor_spec(spec))
    return ModelInputs(args, kwargs)


def as_model_inputs(value: Any) -> ModelInputs:
    """A plain tuple/list (positional arguments), a dict (keyword arguments), ModelInputs, or anything else
    as the one argument: a namedtuple, ``PackedSequence`` or dataclass reaches the model as it is, never unpacked."""
    if isinstance(value, ModelInputs):
        return value
    if isinstance(value, dict):
        return ModelInputs((), dict(value))
    if type(value) is tuple or type(value) is list:
        return ModelInputs(tuple(value), {})
    return ModelInputs((value,), {})


def _call_factory(spec: str):
    from modscope.load.target import is_object_spec, resolve_object

    if not is_object_spec(spec):
        raise UsageError(f"--inputs {spec!r}: expected file.py:function or package.module:function")
    fn = resolve_object(spec)
    if not callable(fn):
        raise UsageError(f"--inputs {spec!r} is a {type(fn).__name__}, not a callable")
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise UsageError(f"--inputs {spec!r} raised {type(exc).__name__}: {exc}")
    except BaseException as exc:  # noqa: BLE001 - sys.exit() in the user's function is the user's error
        raise UsageError(f"--inputs {spec!r} {what_user_code_did(exc)}")

