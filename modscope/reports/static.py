"""Reports of the static analyses (no forward pass): summary, tensors, modules, sharing, audit."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modscope.reports.forward import ForwardReport

from modscope.reports.distributed import DistributedInfo, ShardingInfo
from modscope.reports.presented import Presented


class TensorKind(str, Enum):
    PARAMETER = "parameter"
    BUFFER = "buffer"


class Severity(str, Enum):
    INFO = "info"  # expected, named so it is not mistaken for a problem (a -inf mask, an allowed finding)
    WARNING = "warning"  # worth knowing; does not fail a command
    ERROR = "error"  # a check failed: the command exits 1


class SharedKind(str, Enum):
    TIED = "tied"  # one Parameter/buffer object reachable under several names
    STORAGE = "storage_alias"  # distinct tensor objects over the same memory (views, `.data =` assignment)
    MODULE = "shared_module"  # one submodule registered under several parents/names


@dataclass(frozen=True)
class ModelRef:
    """What was analysed: the model's class name and the target it came from (if any)."""

    type: str
    target: str | None = None


@dataclass(frozen=True)
class TensorInfo:
    """One parameter or buffer, listed once under its first name; ``shared_with`` names its aliases."""

    name: str
    module: str
    kind: TensorKind
    shape: tuple[int, ...] | None  # None: uninitialized lazy tensor
    dtype: str
    device: str
    numel: int | None
    bytes: int | None
    requires_grad: bool
    persistent: bool | None = None  # buffers only: False means absent from state_dict
    shared_with: tuple[str, ...] = ()
    sharding: ShardingInfo | None = None  # DTensors only: shape/numel/bytes above are GLOBAL, this is the shard

    @property
    def initialized(self) -> bool:
        return self.shape is not None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "module": self.module,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
            "device": self.device,
            "numel": self.numel,
            "bytes": self.bytes,
        }
        if self.kind is TensorKind.PARAMETER:
            out["requires_grad"] = self.requires_grad
        else:
            out["persistent"] = self.persistent
        out["shared_with"] = list(self.shared_with)
        if self.sharding is not None:
            out["sharding"] = self.sharding.to_dict()
        return out


@dataclass(frozen=True)
class ModuleInfo:
    """One submodule (listed once, under its first name). Counts are numbers of elements.

    ``params``/``buffers`` count tensors owned directly (a shared tensor counts at its first name only, so
    totals add up); ``*_total`` add the whole subtree. ``signature`` is equal for structurally identical
    modules (same types, tensor shapes/dtypes, children), which lets renderers collapse repeats.
    """

    name: str
    type: str
    depth: int
    params: int
    params_total: int
    buffers: int
    buffers_total: int
    trainable_total: int
    training: bool
    children: tuple[str, ...]
    extra: str = ""
    aliases: tuple[str, ...] = ()
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "depth": self.depth,
            "params": self.params,
            "params_total": self.params_total,
            "buffers": self.buffers,
            "buffers_total": self.buffers_total,
            "trainable_total": self.trainable_total,
            "training": self.training,
            "extra": self.extra,
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class SharedGroup:
    names: tuple[str, ...]
    kind: SharedKind

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "kind": self.kind.value}


#: Every finding code modscope reports (``--allow CODE`` accepts exactly these).
FINDING_CODES = (
    "buffer_device", "device_mismatch", "dtype_mismatch", "mask_buffer", "meta_tensor", "mixed_device",
    "mixed_dtype", "mixed_mesh", "mixed_training_mode", "nonfinite_weights", "partial_parameter",
    "rank_mismatch", "replica_mismatch", "replicated_parameter", "uninitialized_parameter",
    "unregistered_module", "unregistered_tensor", "unsharded_parameter",
)


@dataclass(frozen=True)
class Finding:
    """A warning or error about the model, with a stable machine-readable ``code``."""

    code: str
    name: str  # the parameter/buffer/module concerned ("" = the whole model)
    message: str
    severity: Severity = Severity.WARNING

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "message": self.message, "severity": self.severity.value}


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    frozen_params: int
    param_bytes: int
    buffers: int
    buffer_bytes: int
    modules: int
    uninitialized_params: int = 0  # lazy parameters whose size is not known yet
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SummaryReport(Presented):
    """Everything known about a model without running it (``modscope.summary``)."""

    model: ModelRef
    totals: Totals
    parameters: tuple[TensorInfo, ...]
    buffers: tuple[TensorInfo, ...]
    modules: tuple[ModuleInfo, ...]
    shared: tuple[SharedGroup, ...]
    warnings: tuple[Finding, ...]
    forward: ForwardReport | None = None  # set when inputs were given (``summary(model, inputs=...)``)
    distributed: DistributedInfo | None = None  # DTensor models and gathered (multi-rank) reports

    def module(self, name: str) -> ModuleInfo:
        """The module record named ``name`` ("" is the root)."""
        for info in self.modules:
            if info.name == name or name in info.aliases:
                return info
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": "modscope.summary/1",
            "model": asdict(self.model),
            "totals": self.totals.to_dict(),
            "parameters": [t.to_dict() for t in self.parameters],
            "buffers": [t.to_dict() for t in self.buffers],
            "modules": [m.to_dict() for m in self.modules],
            "shared": [g.to_dict() for g in self.shared],
            "warnings": [w.to_dict() for w in self.warnings],
        }
        if self.forward is not None:
            for entry in out["modules"]:
                entry.update(self.forward.module_dict(entry["name"]))
            memory = self.forward.memory
            out["flops_total"] = self.forward.flops_total
            out["memory"] = None if memory is None else memory.to_dict()
            out["forward"] = self.forward.to_dict()
        if self.distributed is not None:
            out["distributed"] = self.distributed.to_dict()
        return out


@dataclass(frozen=True)
class AuditReport(Presented):
    """Device/dtype/mode/finiteness findings (``modscope.audit``); ``ok`` is False when any is an error."""

    model: ModelRef
    devices: dict[str, int]  # device -> number of elements (params + buffers)
    dtypes: dict[str, int]  # dtype -> number of elements
    findings: tuple[Finding, ...]
    distributed: DistributedInfo | None = None  # DTensor models and gathered (multi-rank) reports

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": "modscope.audit/1",
            "model": asdict(self.model),
            "ok": self.ok,
            "devices": dict(self.devices),
            "dtypes": dict(self.dtypes),
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.distributed is not None:
            out["distributed"] = self.distributed.to_dict()
        return out
