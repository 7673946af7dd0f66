"""Plain-data reports, one file per analysis. Frozen dataclasses keyed by state_dict-style names ("" = root).

Reports never format themselves: ``__rich__`` hands them to ``modscope.render`` and ``to_dict`` gives the
JSON documents described in docs/json.md.
"""
from modscope.report.distributed import DistributedInfo, MeshInfo, RankInfo, ShardingInfo
from modscope.report.static import (
    AuditReport,
    Finding,
    ModelRef,
    ModuleInfo,
    Severity,
    SharedGroup,
    SharedKind,
    SummaryReport,
    TensorInfo,
    TensorKind,
    Totals,
)

__all__ = [
    "AuditReport",
    "DistributedInfo",
    "MeshInfo",
    "RankInfo",
    "ShardingInfo",
    "Finding",
    "ModelRef",
    "ModuleInfo",
    "Severity",
    "SharedGroup",
    "SharedKind",
    "SummaryReport",
    "TensorInfo",
    "TensorKind",
    "Totals",
]
