"""Reports of one forward pass: per-module calls, shapes and FLOPs; memory estimate; what went wrong.

Values passed into and out of modules are kept as small plain structures ("Structure"): ``TensorMeta`` for a
tensor, ``tuple`` for a tuple/list, ``dict`` for a plain dict, ``Record`` for a dataclass, namedtuple or dict
subclass, Python scalars as themselves and ``Opaque`` for anything else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class TensorMeta:
    """A tensor's shape and dtype (no data)."""

    shape: tuple
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True)
class Record:
    """A dataclass, namedtuple or dict subclass (e.g. a ModelOutput): its type and fields."""

    type: str
    fields: dict


@dataclass(frozen=True)
class Opaque:
    """A value that is neither a tensor, a container nor a Python scalar: its type and a short repr."""

    type: str
    repr: str = ""


Structure = Union[TensorMeta, Record, Opaque, tuple, dict, None, bool, int, float, str]


def structure_to_json(value: Structure) -> Any:
    """A Structure as JSON data: tensors become {"shape", "dtype"}, records {"type", "fields"}."""
    if isinstance(value, TensorMeta):
        return {"shape": [d if isinstance(d, int) else str(d) for d in value.shape], "dtype": value.dtype}
    if isinstance(value, Record):
        return {"type": value.type, "fields": {k: structure_to_json(v) for k, v in value.fields.items()}}
    if isinstance(value, Opaque):
        return {"type": value.type, "repr": value.repr}
    if isinstance(value, tuple):
        return [structure_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: structure_to_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class CallShapes:
    """What one call (or several calls with the same shapes) received and returned."""

    args: tuple  # positional arguments, one Structure each
    kwargs: dict  # keyword arguments
    output: Structure  # None also when the call raised
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shapes": structure_to_json(self.args),
            "input_kwargs": structure_to_json(self.kwargs),
            "output_shapes": structure_to_json(self.output),
            "calls": self.count,
        }


@dataclass(frozen=True)
class ModuleForward:
    """One module's part in the pass. FLOPs add up over all its calls; ``self_flops`` excludes submodules.

    ``first`` holds the shapes of the first call; ``variants`` the other distinct shapes it was called with.
    """

    name: str
    calls: int
    first: CallShapes | None
    flops: int | None  # None: FLOPs were not counted
    self_flops: int | None
    output_bytes: int  # bytes of the tensors it returned, summed over calls
    variants: tuple[CallShapes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        first = self.first.to_dict() if self.first else {"input_shapes": None, "input_kwargs": None, "output_shapes": None}
        return {
            "calls": self.calls,
            "input_shapes": first["input_shapes"],
            "input_kwargs": first["input_kwargs"],
            "output_shapes": first["output_shapes"],
            "flops": self.flops,
            "self_flops": self.self_flops,
            "output_bytes": self.output_bytes,
            "call_variants": [v.to_dict() for v in self.variants],
        }


@dataclass(frozen=True)
class ForwardFailure:
    """Where the pass raised: the innermost module whose forward was running, and what it was given."""

    module: str
    type: str
    error: str  # exception class name
    message: str
    call: CallShapes

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "type": self.type,
            "error": self.error,
            "message": self.message,
            "input_shapes": structure_to_json(self.call.args),
            "input_kwargs": structure_to_json(self.call.kwargs),
        }


@dataclass(frozen=True)
class Fallback:
    """A module that could not run on meta tensors and was run on real (CPU) tensors instead."""

    module: str
    type: str
    reason: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "type": self.type, "reason": self.reason, "action": self.action}


@dataclass(frozen=True)
class PrecisionRow:
    """Bytes the same model would need stored in another precision, scaled from the measured pass.

    ``training`` maps each optimizer to the bytes of one training step (None: not a way to train, e.g. int8
    weights). ``compute_dtype`` is the dtype activations, buffers and gradients are assumed to take.
    """

    precision: str  # float32, bfloat16, float16, int8 (weights only)
    compute_dtype: str
    weights: int  # parameters + buffers
    inference: int  # weights + inference activations
    training: dict[str, int | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "compute_dtype": self.compute_dtype,
            "weights": self.weights,
            "inference": self.inference,
            "training": dict(self.training),
        }


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes for inference and for one training step; ``by_dtype`` splits each category by dtype.

    ``activations`` are the tensors autograd saved for backward (measured); ``inference_activations`` the
    largest inputs+outputs of any single module call (a lower bound of the inference working set).
    """

    params: int
    buffers: int
    gradients: int
    optimizer: int
    optimizer_name: str
    activations: int | None  # None: the measuring pass failed (see assumptions)
    inference_activations: int
    by_dtype: dict[str, dict[str, int]]
    assumptions: tuple[str, ...]
    precisions: tuple[PrecisionRow, ...] = ()  # the same model in float32/bfloat16/float16/int8 weights

    @property
    def inference_total(self) -> int:
        return self.params + self.buffers + self.inference_activations

    @property
    def training_total(self) -> int | None:
        if self.activations is None:
            return None
        return self.params + self.buffers + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "buffers": self.buffers,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "optimizer_name": self.optimizer_name,
            "activations": self.activations,
            "inference_activations": self.inference_activations,
            "inference_total": self.inference_total,
            "training_total": self.training_total,
            "by_dtype": {k: dict(v) for k, v in self.by_dtype.items()},
            "assumptions": list(self.assumptions),
            "precisions": [row.to_dict() for row in self.precisions],
        }


@dataclass(frozen=True)
class ForwardReport:
    """One forward pass (``modscope.summary(model, inputs=...)``), modules in the summary's pre-order."""

    device: str
    train_mode: bool
    grad_enabled: bool
    inputs: CallShapes  # what the model was called with; ``output`` is what it returned
    modules: tuple[ModuleForward, ...]
    flops_total: int | None
    uncounted_ops: dict[str, int] | None  # op -> calls that ran with no FLOP formula (None: unknown)
    never_called: tuple[str, ...]  # top-most modules with a forward of their own that never ran
    unused_parameters: tuple[str, ...] | None  # trainable parameters outside the autograd graph (None: unknown)
    fallbacks: tuple[Fallback, ...] = ()
    memory: MemoryEstimate | None = None
    failure: ForwardFailure | None = None
    notes: tuple[str, ...] = ()
    flops_missed_ops: tuple[str, ...] = ()  # uncounted ops that do multiply-adds: flops_total is a lower bound
    _by_name: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self._by_name.update({m.name: m for m in self.modules})

    @property
    def ok(self) -> bool:
        return self.failure is None

    def module(self, name: str) -> ModuleForward:
        return self._by_name[name]

    def module_dict(self, name: str) -> dict[str, Any]:
        """The per-module keys this pass adds to a summary's module entry."""
        entry = self._by_name.get(name)
        if entry is None:
            return {}
        return entry.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The top-level ``forward`` object of the summary document (per-module keys come via module_dict)."""
        return {
            "device": self.device,
            "train_mode": self.train_mode,
            "grad_enabled": self.grad_enabled,
            "input_shapes": structure_to_json(self.inputs.args),
            "input_kwargs": structure_to_json(self.inputs.kwargs),
            "output_shapes": structure_to_json(self.inputs.output),
            "uncounted_ops": None if self.uncounted_ops is None else dict(self.uncounted_ops),
            "flops_lower_bound": bool(self.flops_missed_ops),
            "never_called": list(self.never_called),
            "unused_parameters": None if self.unused_parameters is None else list(self.unused_parameters),
            "fallbacks": [f.to_dict() for f in self.fallbacks],
            "error": None if self.failure is None else self.failure.to_dict(),
            "notes": list(self.notes),
        }
