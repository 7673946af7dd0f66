"""Rich renderables for the static reports: summary table, module tree, shared groups, audit findings."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from modscope._format import human_bytes, human_count, shape_str
from modscope.render.collapse import Row, group_children
from modscope.report import AuditReport, Severity, SummaryReport

DEFAULT_DEPTH = 3


def summary_view(report: SummaryReport, *, depth: int = DEFAULT_DEPTH, collapse: bool = True) -> Group:
    """Module table (to ``depth``), totals, shared groups and warnings (and the forward pass, when run)."""
    if report.forward is not None:
        from modscope.render.forward import forward_summary_view

        return forward_summary_view(report, depth=depth, collapse=collapse)
    parts = [_module_table(report, depth, collapse), _totals_table(report)]
    if report.distributed is not None:
        from modscope.render.distributed import distributed_view

        parts.append(
            distributed_view(report.distributed, param_bytes=report.totals.param_bytes, params=report.totals.params)
        )
    if report.shared:
        parts.append(shared_view(report))
    if report.warnings:
        parts.append(findings_view(report.warnings, title="Warnings"))
    return Group(*parts)


def tree_view(report: SummaryReport, *, depth: int | None = None, collapse: bool = True) -> Tree:
    """The submodule tree with per-node parameter counts; identical sibling runs collapsed."""
    by_name = {m.name: m for m in report.modules}
    root = by_name[""]
    tree = Tree(_tree_label(Row(root), report))
    stack = [(tree, root)]
    while stack:
        branch, module = stack.pop()
        kids = [by_name[c] for c in module.children]
        if not kids:
            continue
        if depth is not None and module.depth >= depth:
            branch.add(Text(f"… {len(kids)} submodule(s) below depth {depth}", style="dim"))
            continue
        for row in group_children(kids, collapse):
            sub = branch.add(_tree_label(row, report))
            stack.append((sub, row.module))
    return tree


def shared_view(report: SummaryReport) -> Table:
    table = Table(title="Shared", title_justify="left", show_edge=False)
    table.add_column("kind")
    table.add_column("names")
    for group in report.shared:
        table.add_row(group.kind.value, ", ".join(group.names))
    return table


def audit_view(report: AuditReport) -> Group:
    devices = ", ".join(f"{k}: {human_count(v)}" for k, v in report.devices.items()) or "none"
    dtypes = ", ".join(f"{k}: {human_count(v)}" for k, v in report.dtypes.items()) or "none"
    header = Text.assemble(
        ("Audit ", "bold"), (report.model.type, "cyan"), f"\n  devices  {devices}\n  dtypes   {dtypes}"
    )
    if report.distributed is not None and report.distributed.gathered:
        header.append(f"\n  ranks    {len(report.distributed.ranks)} (devices and dtypes above are rank "
                      f"{report.distributed.this_rank.rank}'s; findings cover every rank)")
    verdict = Text("OK: no errors" if report.ok else "FAILED: errors found", style="green" if report.ok else "red")
    if not report.findings:
        return Group(header, Text("no findings", style="green"), verdict)
    return Group(header, findings_view(report.findings, title="Findings"), verdict)


def findings_view(findings, *, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("level")
    table.add_column("code")
    table.add_column("message", overflow="fold")
    for f in findings:
        style = "red" if f.severity is Severity.ERROR else "yellow"
        table.add_row(Text(f.severity.value, style=style), f.code, f.message)
    return table


def _module_table(report: SummaryReport, depth: int, collapse: bool) -> Table:
    by_name = {m.name: m for m in report.modules}
    table = Table(title=_title(report), title_justify="left", show_edge=False)
    table.add_column("module")
    table.add_column("type")
    table.add_column("params", justify="right")
    table.add_column("total", justify="right")
    table.add_column("trainable", justify="right")
    table.add_column("buffers", justify="right")
    rows = [(Row(by_name[""]), 0)]
    while rows:
        row, level = rows.pop(0)
        _add_module_row(table, row, level)
        if row.module.depth < depth:
            kids = [by_name[c] for c in row.module.children]
            rows[0:0] = [(r, level + 1) for r in group_children(kids, collapse)]
    return table


def _add_module_row(table: Table, row: Row, level: int) -> None:
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


def _totals_table(report: SummaryReport) -> Table:
    t = report.totals
    table = Table(title="Totals", title_justify="left", show_header=False, show_edge=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note")
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


def _title(report: SummaryReport) -> str:
    target = f"  ({report.model.target})" if report.model.target else ""
    return f"{report.model.type}{target}"


def _tree_label(row: Row, report: SummaryReport) -> Text:
    m = row.module
    text = Text()
    text.append(row.label if m.name else report.model.type, style="bold")
    if m.name:
        text.append(f"  {m.type}", style="cyan")
    if row.count > 1:
        text.append(f" x{row.count}", style="magenta")
        text.append(f"  ({human_count(m.params_total)} each)", style="green")
    elif m.params_total:
        text.append(f"  ({human_count(m.params_total)})", style="green")
    if m.extra and not m.children:
        text.append(f"  {m.extra}", style="dim")
    if m.aliases:
        text.append(f"  also {', '.join(m.aliases)}", style="yellow")
    if m.trainable_total == 0 and m.params_total:
        text.append("  frozen", style="blue")
    return text


def tensor_table(report: SummaryReport) -> Table:
    """Every parameter and buffer, one row each (``summary --tensors``)."""
    table = Table(title="Tensors", title_justify="left", show_edge=False)
    sharded = report.distributed is not None  # DTensors: shape/numel are global; add the local shard
    columns = ("name", "kind", "shape", "dtype", "device", "numel", "grad/persist")
    for col in columns + (("local shape", "placement") if sharded else ()):
        table.add_column(col, justify="right" if col == "numel" else "left")
    for info in (*report.parameters, *report.buffers):
        flag = ("trainable" if info.requires_grad else "frozen") if info.kind.value == "parameter" else (
            "persistent" if info.persistent else "non-persistent"
        )
        shared = f" (= {', '.join(info.shared_with)})" if info.shared_with else ""
        local = ()
        if sharded:
            from modscope.render.distributed import placement_cell

            s = info.sharding
            local = ("" if s is None else shape_str(s.local_shape), placement_cell(s) or "plain")
        table.add_row(
            info.name + shared, info.kind.value, shape_str(info.shape), info.dtype, info.device,
            human_count(info.numel), flag, *local,
        )
    return table

