"""Gradient-flow picture: per-layer mean and max |gradient| on a log scale, layers without one marked.

matplotlib is an optional extra (``pip install modscope[plot]``). The figure is drawn on an Agg canvas of its
own (no pyplot), so the process's matplotlib backend, rcParams and open figures are never touched.
"""
from __future__ import annotations

import io
from pathlib import Path

from modscope.errors import UsageError
from modscope.render.output import check_output_path, write_output
from modscope.reports.grads import GradReport, GradStatus

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_MISSING = (GradStatus.NO_GRAD, GradStatus.ZERO, GradStatus.NONFINITE)


def save_grad_plot(report: GradReport, path: str | Path, *, include_frozen: bool = False) -> Path:
    """Draw ``report``'s layers into ``path`` (.png, .svg or .pdf) and return the path.

    >>> modscope.save_grad_plot(modscope.grads(model, x), "grads.png")
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--plot {path}: the file name must end in {', '.join(FORMATS)}")
    check_output_path(path, "--plot")
    Figure, FigureCanvasAgg = _matplotlib()
    layers = [m for m in report.modules if include_frozen or m.status is not GradStatus.FROZEN]
    if not layers:
        raise UsageError("nothing to plot: every parameter is frozen")
    width = min(40.0, max(6.0, 0.28 * len(layers) + 2))
    fig = Figure(figsize=(width, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(layers)))
    positive = [v for m in layers for v in (m.mean_abs, m.max_abs) if v and v == v and v != float("inf")]
    floor = min(positive) / 10 if positive else 1e-12
    ax.bar(xs, [_bar(m.max_abs, floor) for m in layers], width=0.8, color="#9ecae1", label="max |grad|")
    ax.bar(xs, [_bar(m.mean_abs, floor) for m in layers], width=0.5, color="#3182bd", label="mean |grad|")
    bad = [(x, m) for x, m in zip(xs, layers) if m.status in _MISSING]
    if bad:
        ax.scatter([x for x, _ in bad], [floor] * len(bad), marker="x", color="#d62728", s=60, zorder=3,
                   label="no gradient / zero / non-finite", clip_on=False)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xticks(xs, [m.name or "(root)" for m in layers], rotation=90, fontsize=7)
    for tick, m in zip(ax.get_xticklabels(), layers):
        if m.status in _MISSING:
            tick.set_color("#d62728")
        elif m.status is GradStatus.FROZEN:
            tick.set_color("#888888")
    ax.set_xlim(-0.75, len(layers) - 0.25)
    ax.set_ylabel("|gradient| (log scale)")
    ax.set_title(f"Gradient flow: {report.model.type} (loss={report.loss})")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    drawn = io.BytesIO()  # drawn in memory, then written atomically: a failed write leaves the old file
    fig.savefig(drawn, format=fmt, dpi=120)
    return write_output(path, drawn.getvalue(), "--plot")


def _bar(value: float | None, floor: float) -> float:
    """Bar height: missing, zero or non-finite values draw nothing above the floor."""
    if value is None or value != value or value == float("inf") or value <= floor:
        return floor
    return value


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'modscope[plot]' (or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg
