"""The interactive HTML report: every analysis a page shows, collected in one call (``modscope.report``).

Collecting stays here and in ``collect/``; ``modscope.render.html_report`` only draws the ``ModelPage``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from modscope.errors import ForwardError, UsageError
from modscope.render import views  # noqa: F401  (ModelPage.html/save reach the page renderer: reports/presented.py)
from modscope.reports import SummaryReport
from modscope.reports.page import ModelPage

# A page draws at most this many graph nodes: dot takes seconds per thousand, and a picture of more is unreadable.
GRAPH_NODE_LIMIT = 1500
# Above this many modules the graph is drawn only to the depth that keeps the module count under the node limit.
GRAPH_MODULE_LIMIT = 3000
NEEDS_INPUTS = "--grads and --time run the model: give its input with --input, --kwarg or --inputs"


def report(
    model: Any,
    inputs: Any = None,
    *,
    path: str | Path | None = None,
    grads: bool = False,
    time: bool = False,
    device: str | None = None,
    graph: bool = True,
    graph_depth: int | None = None,
    target: str | None = None,
    key: str | None = None,
    trust: bool = False,
) -> ModelPage:
    """One self-contained HTML page about ``model``: module tree, graph, findings (and gradients, layer times).

    ``inputs`` (a tensor, tuple, dict or ModelInputs) adds one forward pass: shapes, calls, FLOPs, activation
    bytes and the dataflow graph; ``grads`` and ``time`` need it. Given two checkpoints (paths or open
    checkpoints) instead of a model and inputs, the page is their diff. ``path`` writes the page there.

    >>> modscope.report(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), path="resnet18.html")
    >>> modscope.report("run1/last.ckpt", "run2/last.ckpt", path="diff.html")
    """
    if isinstance(model, nn.Module):
        if (grads or time) and inputs is None:
            raise UsageError("grads=True and time=True run the model: give its inputs")
        page = _model_page(model, inputs, grads=grads, time=time, device=device, graph=graph,
                           graph_depth=graph_depth, target=target)
    else:
        if inputs is None:
            raise UsageError(
                f"report of {type(model).__name__}: give an nn.Module (and optionally its inputs), or two checkpoints"
            )
        page = diff_page(model, inputs, key=key, trust=trust)
    if path is not None:
        page.save(path)
    return page


def diff_page(a, b, *, key: str | None = None, trust: bool = False, **options) -> ModelPage:
    """The page of ``modscope.diff(a, b)``: keys only in one, renames, shape/dtype and value changes."""
    from modscope.api.compare import diff

    found = diff(a, b, key=key, trust=trust, **options)
    return ModelPage(title=f"diff {_label(a)} {_label(b)}", diff=found)


def model_page(
    model: nn.Module, summary: SummaryReport, inputs=None, *, grads: bool = False, time: bool = False,
    device: str | None = None, graph: bool = True, graph_depth: int | None = None, target: str | None = None,
) -> ModelPage:
    """The page of a summary already made (the CLI's, so it can print the partial one on a failing pass)."""
    from modscope.api.static import audit

    if (grads or time) and inputs is None:
        raise UsageError(NEEDS_INPUTS)
    found_audit = audit(model, target=target)
    drawn, note = _graph(model, inputs, summary, graph_depth, target) if graph else (None, "not drawn (--no-graph)")
    grad_report = timing = None
    if grads or time:
        if grads:
            from modscope.collect.training.grads import grads as collect_grads

            grad_report = collect_grads(model, inputs, name=target)
        if time:
            from modscope.collect.training.timing import time_layers

            timing = time_layers(model, inputs, device=device, name=target)
    title = summary.model.type + (f" ({target})" if target else "")
    return ModelPage(title=title, summary=summary, audit=found_audit, graph=drawn, graph_note=note,
                     grads=grad_report, timing=timing)


def _model_page(model, inputs, *, device, target, **options) -> ModelPage:
    from modscope.api.static import summary
    from modscope.load.inputs import as_model_inputs

    model_inputs = None if inputs is None else as_model_inputs(inputs)
    found = summary(model, inputs=model_inputs, device=device, target=target)
    return model_page(model, found, model_inputs, device=device, target=target, **options)


def _graph(model, inputs, summary: SummaryReport, depth: int | None, target: str | None):
    """(ModelGraph or None, why not): drawn to a depth a page can hold, the dataflow when inputs are given."""
    from modscope.api.graphs import graph

    if depth is None and len(summary.modules) > GRAPH_MODULE_LIMIT:
        depth = _depth_within(summary, GRAPH_MODULE_LIMIT)
    note = ""
    try:
        drawn = graph(model, inputs, depth=depth, target=target)
    except ForwardError as exc:  # e.g. --device meta: the inputs are on meta, the model is not
        drawn = graph(model, None, depth=depth, target=target)
        note = f"shows the module hierarchy: the dataflow pass failed ({exc})"
    if len(drawn.nodes) > GRAPH_NODE_LIMIT:
        return None, (
            f"not drawn: {len(drawn.nodes):,} nodes (more than {GRAPH_NODE_LIMIT:,}); "
            "give a smaller --graph-depth to draw the upper levels"
        )
    return drawn, note


def _depth_within(summary: SummaryReport, limit: int) -> int:
    """The deepest level at which the modules down to it number at most ``limit`` (at least 0)."""
    per_depth: dict[int, int] = {}
    for m in summary.modules:
        per_depth[m.depth] = per_depth.get(m.depth, 0) + 1
    depth, count = 0, 0
    for level in sorted(per_depth):
        count += per_depth[level]
        if count > limit:
            break
        depth = level
    return depth


def _label(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
