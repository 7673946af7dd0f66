"""The difference between two state dicts (``modscope diff A B``). Keys are A's names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modscope.reports.checkpoint import CheckpointRef
from modscope.reports.presented import Presented


@dataclass(frozen=True)
class PrefixMove:
    """Names ``a_prefix + rest`` on one side are ``b_prefix + rest`` on the other (``count`` of them)."""

    a_prefix: str
    b_prefix: str
    count: int


@dataclass(frozen=True)
class Rename:
    a: str
    b: str

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}


@dataclass(frozen=True)
class ShapeChange:
    key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a_shape": list(self.a_shape), "b_shape": list(self.b_shape)}


@dataclass(frozen=True)
class DtypeChange:
    key: str
    a_dtype: str
    b_dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a_dtype": self.a_dtype, "b_dtype": self.b_dtype}


@dataclass(frozen=True)
class ValueChange:
    """How one tensor's values differ: ``rel_l2`` is ||A - B|| / ||A||; ``num_different`` of ``numel``
    elements differ (beyond ``atol + rtol * |B|`` when tolerances are given)."""

    key: str
    max_abs_diff: float
    mean_abs_diff: float
    rel_l2: float
    num_different: int
    numel: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "rel_l2": self.rel_l2,
            "num_different": self.num_different,
        }


@dataclass(frozen=True)
class StateDictDiff(Presented):
    """Keys only on one side, names that moved, shape/dtype/value changes, and how many tensors are equal.

    ``unchanged`` is None with ``keys_only`` (values were not read).
    """

    a: CheckpointRef
    b: CheckpointRef
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    renamed: tuple[Rename, ...]
    shape_changed: tuple[ShapeChange, ...]
    dtype_changed: tuple[DtypeChange, ...]
    value_changed: tuple[ValueChange, ...]
    unchanged: int | None
    keys_only: bool = False
    rtol: float = 0.0
    atol: float = 0.0
    prefix_moves: tuple[PrefixMove, ...] = ()  # how most renames are explained

    @property
    def identical(self) -> bool:
        return not (
            self.only_in_a or self.only_in_b or self.renamed or self.shape_changed or self.dtype_changed
            or self.value_changed
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "modscope.diff/1",
            "identical": self.identical,
            "only_in_a": list(self.only_in_a),
            "only_in_b": list(self.only_in_b),
            "renamed": [r.to_dict() for r in self.renamed],
            "shape_changed": [c.to_dict() for c in self.shape_changed],
            "dtype_changed": [c.to_dict() for c in self.dtype_changed],
            "value_changed": [c.to_dict() for c in self.value_changed],
            "unchanged": self.unchanged,
        }
