"""Plain-data reports, one file per analysis. Frozen dataclasses keyed by state_dict-style names ("" = root).

Reports never format themselves and never import a renderer: their ``__rich__``/``_repr_html_`` ask the
registry in ``report.presented``, which ``modscope.render.views`` fills; ``to_dict`` gives the JSON documents
described in docs/json.md.
"""
from modscope.reports.grads import (
    GradReport,
    GradStatus,
    GradStep,
    GradThresholds,
    GradWatchReport,
    ModuleGrad,
    ParamGrad,
    ParamGradStats,
)
from modscope.reports.nonfinite import NonfiniteEvent, NonfiniteReport, Origin, TensorStats
from modscope.reports.distributed import DistributedInfo, MeshInfo, RankInfo, ShardingInfo
from modscope.reports.static import (
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
from modscope.reports.forward import ForwardReport, MemoryEstimate
from modscope.reports.timing import LayerTiming, PassTiming, TimeStat, TimingReport

__all__ = [
    "AuditReport",
    "DistributedInfo",
    "MeshInfo",
    "RankInfo",
    "ShardingInfo",
    "Finding",
    "ForwardReport",
    "MemoryEstimate",
    "GradReport",
    "GradStatus",
    "GradStep",
    "GradThresholds",
    "GradWatchReport",
    "LayerTiming",
    "ModuleGrad",
    "NonfiniteEvent",
    "NonfiniteReport",
    "Origin",
    "ParamGrad",
    "ParamGradStats",
    "PassTiming",
    "TensorStats",
    "TimeStat",
    "TimingReport",
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
