"""Rich renderables for the static reports: summary table, module tree, shared groups, audit findings."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from modscope.core.text import human_count, shape_str
from modscope.render.collapse import Row, group_children
from modscope.render.fit import FitTable
from modscope.render.summary_tables import (
    DEFAULT_DEPTH,
    findings_view,
    module_table,
    shared_view,
    totals_table,
)
from modscope.reports import AuditReport, SummaryReport


def summary_view(report: SummaryReport, *, depth: int = DEFAULT_DEPTH, collapse: bool = True) -> Group:
    """Module table (to ``depth``), totals, shared groups and warnings (and the forward pass, when run)."""
    if report.forward is not None:
        from modscope.render.forward import forward_summary_view

        return forward_summary_view(report, depth=depth, collapse=collapse)
    parts = [module_table(report, depth, collapse), totals_table(report)]
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


def tensor_table(report: SummaryReport) -> FitTable:
    """Every parameter and buffer, one row each (``summary --tensors``).

    Too narrow a width leaves out device, grad/persist, kind, numel and dtype, in that order."""
    table = FitTable(title="Tensors")
    sharded = report.distributed is not None  # DTensors: shape/numel are global; add the local shard
    columns = ("name", "kind", "shape", "dtype", "device", "numel", "grad/persist")
    drops = {"device": 1, "grad/persist": 2, "kind": 3, "numel": 4, "dtype": 5, "placement": 6}
    for col in columns + (("local shape", "placement") if sharded else ()):
        table.add_column(col, justify="right" if col == "numel" else "left", drop=drops.get(col),
                         kind="wrap" if col == "placement" else "fixed")
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

