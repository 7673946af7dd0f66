"""modscope: look inside any PyTorch nn.Module.

>>> import modscope
>>> report = modscope.summary(model)        # parameters vs buffers, tree, sharing, hazards
>>> report.totals.params, report.to_dict()
>>> report = modscope.summary(model, inputs=torch.randn(1, 3, 224, 224))   # plus one forward pass
>>> report.forward.flops_total, report.forward.memory.training_total
>>> modscope.grads(model, x).problems          # parameters with no, zero or non-finite gradients
>>> with modscope.watch_gradients(model) as watch: ...   # gradient norms over a training loop
>>> with modscope.detect_nonfinite(model) as det: ...    # the first NaN/Inf, forward and backward
>>> modscope.time_layers(model, x, backward=True)        # per-layer self/total time
>>> modscope.report(model, x, path="report.html")         # all of it on one interactive HTML page

Public names are imported lazily, so ``import modscope`` does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "summary": "modscope.api.static",
    "audit": "modscope.api.static",
    "graph": "modscope.api.graphs",
    "report": "modscope.api.report",
    "ModelPage": "modscope.reports.page",
    "distributed_summary": "modscope.api.distributed",
    "distributed_audit": "modscope.api.distributed",
    "load_model": "modscope.load.target",
    "ModelInputs": "modscope.load.inputs",
    "preserved_state": "modscope.collect.hooks",
    "ModscopeError": "modscope.errors",
    "ForwardError": "modscope.errors",
    "SummaryReport": "modscope.reports",
    "AuditReport": "modscope.reports",
    "open_checkpoint": "modscope.checkpoint",
    "load_weights": "modscope.checkpoint.weights",
    "inspect_checkpoint": "modscope.api.compare",
    "diff": "modscope.api.compare",
    "check": "modscope.api.compare",
    "CheckpointSummary": "modscope.reports.checkpoint",
    "CompatReport": "modscope.reports.checkpoint",
    "StateDictDiff": "modscope.reports.diff",
    "ModelGraph": "modscope.reports.graph",
    "ForwardReport": "modscope.reports",
    "grads": "modscope.collect.training.grads",
    "watch_gradients": "modscope.collect.training.grad_watch",
    "save_grad_plot": "modscope.render.grad_plot",
    "detect_nonfinite": "modscope.collect.training.nonfinite",
    "find_nonfinite": "modscope.collect.training.nonfinite",
    "time_layers": "modscope.collect.training.timing",
    "GradThresholds": "modscope.reports",
    "GradReport": "modscope.reports",
    "GradWatchReport": "modscope.reports",
    "NonfiniteReport": "modscope.reports",
    "TimingReport": "modscope.reports",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        from modscope.render import views  # noqa: F401  (reports can show themselves: report/presented.py)

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modscope' has no attribute {name!r}")


def __dir__():
    return __all__
