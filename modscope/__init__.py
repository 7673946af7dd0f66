"""modscope: look inside any PyTorch nn.Module.

>>> import modscope
>>> report = modscope.summary(model)        # parameters vs buffers, tree, sharing, hazards
>>> report.totals.params, report.to_dict()

Public names are imported lazily, so ``import modscope`` does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "summary": "modscope.static",
    "audit": "modscope.static",
    "distributed_summary": "modscope.distributed",
    "distributed_audit": "modscope.distributed",
    "load_model": "modscope.load",
    "ModelInputs": "modscope.inputs",
    "preserved_state": "modscope.hooks",
    "ModscopeError": "modscope.errors",
    "SummaryReport": "modscope.report",
    "AuditReport": "modscope.report",
    "open_checkpoint": "modscope.checkpoint",
    "load_weights": "modscope.checkpoint.weights",
    "inspect_checkpoint": "modscope.compare",
    "diff": "modscope.compare",
    "check": "modscope.compare",
    "CheckpointSummary": "modscope.report.checkpoint",
    "CompatReport": "modscope.report.checkpoint",
    "StateDictDiff": "modscope.report.diff",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modscope' has no attribute {name!r}")


def __dir__():
    return __all__
