"""The tables a summary is built from, with or without a forward pass: modules, totals, shared groups, findings."""
from __future__ import annotations

from rich.text import Text

from modscope.core.text import human_bytes, human_count
from modscope.render.collapse import Row, group_children
from modscope.render.fit import PROSE, WRAP, FitTable
from modscope.reports import Severity, SummaryReport

DEFAULT_DEPTH = 3


def shared_view(report: SummaryReport) -> FitTable:
    table = FitTable(title="Shared")
    table.add_column("kind")
    table.add_column("names", kind=WRAP)
    for group in report.shared:
        table.add_row(group.kind.value, ", ".join(group.names))
    return table


def findings_view(findings, *, title: str) -> FitTable:
    table = FitTable(title=title)
    table.add_column("level")
    table.add_column("code", kind=PROSE)
    table.add_column("message", kind=PROSE)
    for f in findings:
        style = {Severity.ERROR: "red", Severity.INFO: "dim"}.get(f.severity, "yellow")
        table.add_row(Text(f.severity.value, style=style), f.code, f.message)
    return table


def module_table(report: SummaryReport, depth: int, collapse: bool) -> FitTable:
    """One row per module to ``depth``.

    Too narrow a width leaves out buffers, trainable, params and type, in that order."""
    by_name = {m.name: m for m in report.modules}
    table = FitTable(title=summary_title(report))
    table.add_column("module")
    table.add_column("type", drop=4)
    table.add_column("params", justify="right", drop=3)
    table.add_column("total", justify="right")
    table.add_column("trainable", justify="right", drop=2)
    table.add_column("buffers", justify="right", drop=1)
    rows = [(Row(by_name[""]), 0)]
    while rows:
        row, level = rows.pop(0)
        _add_module_row(table, row, level)
        if row.module.depth < depth:
            kids = [by_name[c] for c in row.module.children]
            rows[0:0] = [(r, level + 1) for r in group_children(kids, collapse)]
    return table


def _add_module_row(table: FitTable, row: Row, level: int) -> None:
    m = row.module
    each = f" x{row.count}" if row.count > 1 else ""
    table.add_row(
        "  " * level + row.label,
        m.type + each,
        _count(m.params, row.count),
        _count(m.params_total, row.count),
        _count(m.trainable_total, row.count),
        _count(m.buffers_total, row.count),
    )


def _count(n: int, copies: int) -> str:
    if n == 0:
        return "-"
    return f"{human_count(n)} each" if copies > 1 else human_count(n)


def totals_table(report: SummaryReport) -> FitTable:
    t = report.totals
    table = FitTable(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note", kind=PROSE)
    table.add_row("parameters", f"{t.params:,}", f"{human_bytes(t.param_bytes)}")
    table.add_row("  trainable", f"{t.trainable_params:,}", "")
    table.add_row("  frozen", f"{t.frozen_params:,}", "")
    if t.uninitialized_params:
        table.add_row("  uninitialized", f"{t.uninitialized_params} tensor(s)", "lazy: size unknown until forward")
    non_persistent = sum(b.numel or 0 for b in report.buffers if b.persistent is False)
    note = f"{non_persistent:,} non-persistent (not in state_dict)" if non_persistent else ""
    table.add_row("buffers", f"{t.buffers:,}", f"{human_bytes(t.buffer_bytes)} {note}".strip())
    table.add_row("modules", f"{t.modules:,}", "")
    for dtype, size in sorted(t.bytes_by_dtype.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {dtype}", human_bytes(size), "")
    return table


def summary_title(report: SummaryReport) -> str:
    target = f"  ({report.model.target})" if report.model.target else ""
    return f"{report.model.type}{target}"
