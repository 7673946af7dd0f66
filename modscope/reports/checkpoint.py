"""Reports about checkpoints on their own: what a file holds (``modscope summary CKPT``) and whether it loads
into a model (``modscope check TARGET --weights CKPT``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modscope.reports.dcp_layout import DcpLayout
from modscope.reports.presented import Presented
from modscope.reports.static import ModelRef, SharedGroup


@dataclass(frozen=True)
class CheckpointRef:
    """Which checkpoint: its path (or TARGET), detected format, and the state dict chosen inside it."""

    path: str
    format: str
    key: str | None = None
    candidates: tuple[tuple[str, int], ...] = ()  # every state dict found: (key, number of tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "key": self.key,
            "candidates": [{"key": k, "tensors": n} for k, n in self.candidates],
        }


@dataclass(frozen=True)
class StoredTensor:
    """One tensor in a checkpoint, as its header/metadata describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    bytes: int
    shared_with: tuple[str, ...] = ()  # other names over the same stored bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "numel": self.numel,
            "bytes": self.bytes,
            "shared_with": list(self.shared_with),
        }


@dataclass(frozen=True)
class PrefixNode:
    """A dotted-name prefix (``layers.0.attn``) as a tree node; "" is the root.

    ``tensors``/``numel`` count tensors stored directly under this prefix, ``*_total`` the whole subtree;
    ``signature`` is equal for prefixes with the same relative names, shapes and dtypes (collapsible runs).
    """

    name: str
    depth: int
    children: tuple[str, ...]
    tensors: int
    numel: int
    tensors_total: int
    numel_total: int
    bytes_total: int
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["children"] = list(self.children)
        del out["signature"]
        return out


@dataclass(frozen=True)
class CheckpointTotals:
    tensors: int
    numel: int  # elements, each stored buffer counted once (tied names add nothing)
    bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointSummary(Presented):
    """What a checkpoint holds, from headers/metadata only (``modscope summary CKPT``)."""

    checkpoint: CheckpointRef
    totals: CheckpointTotals
    tensors: tuple[StoredTensor, ...]
    nodes: tuple[PrefixNode, ...]  # pre-order, root first
    shared: tuple[SharedGroup, ...]
    layout: DcpLayout | None = None  # DCP folders: chunks per tensor and bytes per data file

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": "modscope.checkpoint/1",
            "checkpoint": self.checkpoint.to_dict(),
            "totals": self.totals.to_dict(),
            "tensors": [t.to_dict() for t in self.tensors],
            "tree": [n.to_dict() for n in self.nodes],
            "shared": [g.to_dict() for g in self.shared],
        }
        if self.layout is not None:
            out["layout"] = self.layout.to_dict()
        return out


@dataclass(frozen=True)
class ShapeMismatch:
    key: str
    model_shape: tuple[int, ...] | None
    checkpoint_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model_shape": None if self.model_shape is None else list(self.model_shape),
            "checkpoint_shape": list(self.checkpoint_shape),
        }


@dataclass(frozen=True)
class DtypeCast:
    """``load_state_dict`` copies into the model's tensor, silently casting; ``lossy`` when precision is lost."""

    key: str
    checkpoint_dtype: str
    model_dtype: str
    lossy: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PrefixFix:
    """Rename checkpoint keys ``strip + rest`` to ``add + rest``: ``fixes`` keys would then match, ``clean``
    when nothing would be missing or unexpected after it."""

    strip: str
    add: str
    fixes: int
    clean: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CompatReport(Presented):
    """A dry run of ``model.load_state_dict(checkpoint, strict=True)`` (``modscope check``)."""

    model: ModelRef
    checkpoint: CheckpointRef
    matched: int
    missing: tuple[str, ...]  # the model expects them, the checkpoint lacks them
    unexpected: tuple[str, ...]  # the checkpoint has them, the model does not take them
    shape_mismatches: tuple[ShapeMismatch, ...]  # raise even with strict=False
    dtype_casts: tuple[DtypeCast, ...]
    non_persistent_buffers: tuple[str, ...]  # model buffers never loaded from (or saved to) a state dict
    ignored: tuple[str, ...] = ()  # keys under a submodule set to None: load_state_dict skips them silently
    suggestion: PrefixFix | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.check/1",
            "model": asdict(self.model),
            "checkpoint": self.checkpoint.to_dict(),
            "ok": self.ok,
            "matched": self.matched,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatches": [m.to_dict() for m in self.shape_mismatches],
            "dtype_casts": [c.to_dict() for c in self.dtype_casts],
            "non_persistent_buffers": list(self.non_persistent_buffers),
            "ignored": list(self.ignored),
            "suggestion": None if self.suggestion is None else self.suggestion.to_dict(),
            "notes": list(self.notes),
        }
