"""Rich renderables for checkpoint reports: what a file holds (table and tree) and the load dry run."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from modscope.core.text import human_bytes, human_count, shape_str
from modscope.render.collapse import Row, group_children
from modscope.render.fit import PROSE, FitTable
from modscope.render.summary_tables import DEFAULT_DEPTH, shared_view
from modscope.reports.checkpoint import CheckpointRef, CheckpointSummary, CompatReport

#: entries shown per list before "... and N more" (None: all)
LIMIT = 20


def source_label(ref: CheckpointRef) -> str:
    key = f", key {ref.key}" if ref.key else ""
    return f"{ref.path} ({ref.format}{key})"


def checkpoint_summary_view(report: CheckpointSummary, *, depth: int = DEFAULT_DEPTH, collapse: bool = True) -> Group:
    """Prefix table (to ``depth``), totals, shared storage and the other state dicts in the file."""
    parts = [titled(source_label(report.checkpoint), _prefix_table(report, depth, collapse)), totals_table(report)]
    if report.shared:
        parts.append(shared_view(report))
    others = _other_candidates(report.checkpoint)
    if others:
        parts.append(Text(f"also in this file (choose with --key): {others}", style="dim"))
    if report.layout is not None:
        from modscope.render.dcp_layout import layout_view

        parts.append(layout_view(report.layout))
    return Group(*parts)


def checkpoint_tree_view(report: CheckpointSummary, *, depth: int | None = None, collapse: bool = True) -> Tree:
    """Name prefixes as a tree, tensors (shape, dtype) as leaves; runs of identical siblings collapsed."""
    by_name = {n.name: n for n in report.nodes}
    leaves = defaultdict(list)
    for t in report.tensors:
        leaves[t.name.rpartition(".")[0]].append(t)
    root = Tree(Text.assemble((source_label(report.checkpoint), "bold"), _size(by_name[""].numel_total)))
    stack = [(root, by_name[""])]
    while stack:
        branch, node = stack.pop()
        if depth is not None and node.depth >= depth and (node.children or leaves[node.name]):
            branch.add(Text(f"… {node.tensors_total} tensor(s) below depth {depth}", style="dim"))
            continue
        cut = len(node.name) + 1 if node.name else 0
        for t in leaves[node.name]:
            label = Text(t.name[cut:], style="bold")
            label.append(f"  {shape_str(t.shape)} {t.dtype}", style="cyan")
            if report.layout is not None:
                from modscope.render.dcp_layout import chunk_note

                label.append(chunk_note(report.layout.of(t.name)), style="dim")
            if t.shared_with:
                label.append(f"  = {', '.join(t.shared_with)}", style="yellow")
            branch.add(label)
        for row in group_children([by_name[c] for c in node.children], collapse):
            label = Text(row.label[cut:], style="bold")
            if row.count > 1:
                label.append(f" x{row.count}", style="magenta")
                label.append(_size(row.module.numel_total, " each"))
            else:
                label.append(_size(row.module.numel_total))
            stack.append((branch.add(label), row.module))
    return root


def compat_view(report: CompatReport, *, limit: int | None = LIMIT) -> Group:
    """Everything ``load_state_dict(strict=True)`` would complain about or do silently, and the verdict."""
    header = Text.assemble(
        ("Check ", "bold"), (report.model.type, "cyan"), " <- ", source_label(report.checkpoint),
        f"\n  {report.matched:,} key(s) match",
    )  # fmt: skip
    parts: list = [header]
    if report.missing:
        parts.append(name_list("Missing from the checkpoint", report.missing, limit, "red"))
    if report.unexpected:
        non_persistent = set(report.non_persistent_buffers)
        parts.append(name_list("Unexpected in the checkpoint", [
            f"{k}  (a non-persistent buffer in the model)" if k in non_persistent else k for k in report.unexpected
        ], limit, "red"))  # fmt: skip
    if report.shape_mismatches:
        table = FitTable()
        for col in ("key", "model", "checkpoint"):
            table.add_column(col)
        for m in capped(report.shape_mismatches, limit, table):
            table.add_row(m.key, shape_str(m.model_shape), shape_str(m.checkpoint_shape))
        parts.append(titled("Shape mismatches (raise even with strict=False)", table))
    if report.dtype_casts:
        table = FitTable()
        for col in ("key", "checkpoint", "model", ""):
            table.add_column(col)
        for c in capped(report.dtype_casts, limit, table):
            table.add_row(c.key, c.checkpoint_dtype, c.model_dtype, Text("lossy", style="yellow") if c.lossy else "")
        parts.append(titled("Dtype casts (load_state_dict copies them silently)", table))
    if report.non_persistent_buffers:
        parts.append(name_list("Non-persistent buffers (never loaded; keep their constructed values)",
                               report.non_persistent_buffers, limit, "dim"))  # fmt: skip
    if report.ignored:
        parts.append(name_list("Ignored (under a submodule set to None)", report.ignored, limit, "dim"))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    if report.suggestion is not None:
        s = report.suggestion
        action = _prefix_action(s.strip, s.add)
        after = "then it loads cleanly" if s.clean else "some differences remain"
        how = f" (--key {s.strip.rstrip('.')} strips it here)" if s.strip and not s.add else ""
        parts.append(Text(f"suggestion: {action} in the checkpoint's keys{how}: fixes {s.fixes} key(s); {after}",
                          style="cyan"))
    if report.missing or report.unexpected:
        parts.append(Text(
            f"with strict=False: {len(report.missing)} missing key(s) keep their initial values and "
            f"{len(report.unexpected)} unexpected key(s) are ignored"
            + ("; the shape mismatches still raise" if report.shape_mismatches else ""),
            style="yellow",
        ))  # fmt: skip
    verdict = "OK: loads with strict=True" if report.ok else "FAILED: load_state_dict(strict=True) would raise"
    parts.append(Text(verdict, style="green" if report.ok else "red"))
    return Group(*parts)


def name_list(title: str, names, limit: int | None, style: str = "") -> Text:
    names = list(names)
    shown = names if limit is None else names[:limit]
    text = Text(f"{title} ({len(names)}):", style="bold")
    for name in shown:
        text.append(f"\n  {name}", style=style)
    if len(shown) < len(names):
        text.append(f"\n  … and {len(names) - len(shown)} more (--all lists every one)", style="dim")
    return text


def titled(title: str, table: FitTable) -> Group:
    """A bold title line over ``table`` (a table's own title wraps at the table's width)."""
    return Group(Text(title, style="bold"), table)


def capped(items, limit: int | None, table: FitTable):
    items = list(items)
    if limit is not None and len(items) > limit:
        table.caption = f"… and {len(items) - limit} more (--all lists every one)"
        return items[:limit]
    return items


def _prefix_action(strip: str, add: str) -> str:
    if strip and add:
        return f"replace the prefix {strip!r} with {add!r}"
    return f"strip the prefix {strip!r}" if strip else f"add the prefix {add!r}"


def _prefix_table(report: CheckpointSummary, depth: int, collapse: bool) -> FitTable:
    """Too narrow a width leaves out tensors, then elements; prefixes and bytes always stay."""
    by_name = {n.name: n for n in report.nodes}
    table = FitTable()
    table.add_column("prefix")
    table.add_column("tensors", justify="right", drop=1)
    table.add_column("elements", justify="right", drop=2)
    table.add_column("bytes", justify="right")
    rows = [(Row(by_name[""]), 0)]
    while rows:
        row, level = rows.pop(0)
        node, each = row.module, " each" if row.count > 1 else ""
        label = row.label if node.name else "(all)"
        table.add_row(
            "  " * level + label + (f" x{row.count}" if row.count > 1 else ""),
            f"{node.tensors_total:,}",
            human_count(node.numel_total) + each,
            human_bytes(node.bytes_total) + each,
        )
        if node.depth < depth:
            kids = [by_name[c] for c in node.children]
            rows[0:0] = [(r, level + 1) for r in group_children(kids, collapse)]
    return table


def totals_table(report: CheckpointSummary) -> FitTable:
    t = report.totals
    table = FitTable(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note", kind=PROSE)
    tied = sum(len(g.names) - 1 for g in report.shared if g.kind.value == "tied")
    table.add_row("tensors", f"{t.tensors:,}", f"{tied} tied name(s) share stored bytes" if tied else "")
    table.add_row("elements", f"{t.numel:,}", "")
    table.add_row("bytes", human_bytes(t.bytes), "")
    for dtype, size in sorted(t.bytes_by_dtype.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {dtype}", human_bytes(size), "")
    return table


def _other_candidates(ref: CheckpointRef) -> str:
    chosen = ref.key or ""
    return ", ".join(f"{k or '(root)'} ({n} tensors)" for k, n in ref.candidates if k != chosen)


def _size(numel: int, each: str = "") -> Text:
    return Text(f"  ({human_count(numel)}{each})", style="green") if numel else Text("")


def stored_tensor_table(report: CheckpointSummary) -> FitTable:
    """Every tensor of the checkpoint, one row each (``summary CKPT --tensors``).

    Too narrow a width leaves out files, split, chunks, numel and dtype, in that order."""
    table = FitTable(title="Tensors")
    layout = report.layout  # DCP: how each tensor is chunked, and in which files
    drops = {"files": 1, "split": 2, "chunks": 3, "numel": 4, "dtype": 5}
    for col in ("name", "shape", "dtype", "numel", "bytes") + (("chunks", "split", "files") if layout else ()):
        table.add_column(col, justify="right" if col in ("numel", "bytes") else "left", drop=drops.get(col))
    for t in report.tensors:
        shared = f" (= {', '.join(t.shared_with)})" if t.shared_with else ""
        extra = ()
        if layout is not None:
            from modscope.render.dcp_layout import chunk_cells

            extra = chunk_cells(layout.of(t.name))
        table.add_row(t.name + shared, shape_str(t.shape), t.dtype, human_count(t.numel), human_bytes(t.bytes), *extra)
    return table
