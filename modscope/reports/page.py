"""What one interactive HTML report shows (``modscope.report`` / ``modscope report``): the reports it is made of.

A ``ModelPage`` is plain data like every report: the summary (with its forward pass when inputs were given),
the audit, the architecture graph, and, when asked for, gradients, layer times or a checkpoint diff. The page
itself is drawn by ``modscope.render.html_report`` and reached through ``report.presented`` (kind ``page``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modscope.reports.diff import StateDictDiff
from modscope.reports.grads import GradReport
from modscope.reports.graph import ModelGraph
from modscope.reports.presented import present
from modscope.reports.static import AuditReport, SummaryReport
from modscope.reports.timing import TimingReport


@dataclass(frozen=True)
class ModelPage:
    """The parts of one report page; a model page has ``summary``, a diff page has ``diff`` instead.

    ``graph_note`` says why there is no graph (too many nodes, Graphviz missing), or is empty.

    >>> page = modscope.report(model, torch.randn(1, 3, 224, 224), path="report.html")
    >>> page.summary.totals.params, len(page.html())
    """

    title: str
    summary: SummaryReport | None = None
    audit: AuditReport | None = None
    graph: ModelGraph | None = None
    graph_note: str = ""
    grads: GradReport | None = None
    timing: TimingReport | None = None
    diff: StateDictDiff | None = None

    def html(self) -> str:
        """The whole page: one self-contained HTML document (styles, script and data inlined)."""
        return present(self, "page")

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (atomically); returns the path."""
        return present(self, "page_file", path)

    def documents(self) -> dict[str, Any]:
        """The JSON documents the page embeds, by id: each the same as its command's ``--json``."""
        parts = {
            "summary": self.summary, "audit": self.audit, "grads": self.grads, "time": self.timing, "diff": self.diff,
        }
        return {name: report.to_dict() for name, report in parts.items() if report is not None}
