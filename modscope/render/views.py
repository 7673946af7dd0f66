"""Which renderer shows which report: every (report type, kind) pair, registered into ``report.presented``.

Importing this module is what lets ``print``-like display work (``rich.print(report)``, a report as the last
line of a notebook cell); the ``modscope`` namespace and the CLI import it before handing out a report.
HTML for notebooks is the same terminal view recorded by rich, so both show the same facts.
"""
from __future__ import annotations

import io

from rich.console import Console

from modscope.render.checkpoint import checkpoint_summary_view, compat_view
from modscope.render.console import audit_view, summary_view
from modscope.render.diff import diff_view
from modscope.render.grads import grads_view, watch_view
from modscope.render.graph import svg_or_none, to_dot, write
from modscope.render.html_report import page_html, write_page
from modscope.render.nonfinite import nonfinite_view
from modscope.render.timing import timing_view
from modscope.reports import AuditReport, GradReport, GradWatchReport, NonfiniteReport, SummaryReport, TimingReport
from modscope.reports.checkpoint import CheckpointSummary, CompatReport
from modscope.reports.diff import StateDictDiff
from modscope.reports.graph import ModelGraph
from modscope.reports.page import ModelPage
from modscope.reports.presented import register

HTML_WIDTH = 120  # columns of the recorded terminal view shown in a notebook

TERMINAL_VIEWS = {
    SummaryReport: summary_view,
    AuditReport: audit_view,
    GradReport: grads_view,
    GradWatchReport: watch_view,
    NonfiniteReport: nonfinite_view,
    TimingReport: timing_view,
    CheckpointSummary: checkpoint_summary_view,
    CompatReport: compat_view,
    StateDictDiff: diff_view,
}


def html_fragment(renderable) -> str:
    """A rich renderable as a self-contained HTML ``<pre>`` block (inline styles, no scripts, no fonts)."""
    console = Console(record=True, file=io.StringIO(), width=HTML_WIDTH, color_system="truecolor", soft_wrap=False)
    console.print(renderable)
    return console.export_html(
        inline_styles=True,
        code_format='<pre style="font-family:ui-monospace,monospace;line-height:1.25">{code}</pre>',
    )


def _html_of(view):
    return lambda report: html_fragment(view(report))


for _type, _view in TERMINAL_VIEWS.items():
    register(_type, "rich", _view)
    register(_type, "html", _html_of(_view))
register(ModelGraph, "dot", to_dot)
register(ModelGraph, "svg", svg_or_none)
register(ModelGraph, "file", write)
register(ModelPage, "page", page_html)
register(ModelPage, "page_file", write_page)
