"""Rich renderable for ``modscope diff``: one section per kind of difference, then a one-line verdict."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import human_count, shape_str
from modscope.render.checkpoint import LIMIT, capped, name_list, source_label
from modscope.render.fit import WORDS, FitTable
from modscope.reports.diff import StateDictDiff


def diff_view(report: StateDictDiff, *, limit: int | None = LIMIT) -> Group:
    parts: list = [Text.assemble(("A ", "bold"), source_label(report.a), "\n", ("B ", "bold"), source_label(report.b))]
    if report.only_in_a:
        parts.append(name_list("Only in A", report.only_in_a, limit, "red"))
    if report.only_in_b:
        parts.append(name_list("Only in B", report.only_in_b, limit, "green"))
    if report.renamed:
        parts.append(_renamed(report, limit))
    if report.shape_changed:
        table = _table("Shape changed", "key", "A", "B")
        for c in capped(report.shape_changed, limit, table):
            table.add_row(c.key, shape_str(c.a_shape), shape_str(c.b_shape))
        parts.append(table)
    if report.dtype_changed:
        table = _table("Dtype changed", "key", "A", "B")
        for c in capped(report.dtype_changed, limit, table):
            table.add_row(c.key, c.a_dtype, c.b_dtype)
        parts.append(table)
    if report.value_changed:
        table = _table("Values changed", "key", "max |A-B|", "mean |A-B|", "rel L2", "differing")
        for c in capped(sorted(report.value_changed, key=lambda c: -_sortable(c.rel_l2)), limit, table):
            share = f"{human_count(c.num_different)} of {human_count(c.numel)} ({100 * c.num_different / c.numel:.1f}%)"
            table.add_row(c.key, _num(c.max_abs_diff), _num(c.mean_abs_diff), _num(c.rel_l2), share)
        parts.append(table)
    parts.append(_verdict(report))
    return Group(*parts)


def _renamed(report: StateDictDiff, limit: int | None) -> Text:
    text = Text(f"Renamed ({len(report.renamed)}):", style="bold")
    explained = 0
    for move in report.prefix_moves:
        text.append(f"\n  {move.a_prefix or '(no prefix)'}* -> {move.b_prefix or '(no prefix)'}*  ", style="yellow")
        text.append(f"{move.count} tensor(s)", style="dim")
        explained += move.count
    rest = report.renamed[explained:]  # prefix moves come first, then renames matched by content
    shown = rest if limit is None else rest[:limit]
    for r in shown:
        text.append(f"\n  {r.a} -> {r.b}", style="yellow")
    if len(shown) < len(rest):
        text.append(f"\n  … and {len(rest) - len(shown)} more (--all lists every one)", style="dim")
    return text


def _verdict(report: StateDictDiff) -> Text:
    if report.identical:
        what = "same keys, shapes and dtypes (values not compared: --keys-only)" if report.keys_only else "identical"
        return Text(what, style="green")
    counts = [
        (len(report.only_in_a), "only in A"), (len(report.only_in_b), "only in B"), (len(report.renamed), "renamed"),
        (len(report.shape_changed), "shape changed"), (len(report.dtype_changed), "dtype changed"),
        (len(report.value_changed), "values changed"),
    ]  # fmt: skip
    said = [f"{n} {what}" for n, what in counts if n]
    if report.unchanged is not None:
        said.append(f"{report.unchanged} unchanged")
    tolerance = f" (rtol={report.rtol:g}, atol={report.atol:g})" if report.rtol or report.atol else ""
    return Text("different: " + ", ".join(said) + tolerance, style="red")


def _table(title: str, *columns: str) -> FitTable:
    """Too narrow a width leaves out mean |A-B|, max |A-B| and differing (the values table); keys always stay."""
    table = FitTable(title=title)
    drops = {"mean |A-B|": 1, "max |A-B|": 2, "differing": 3}
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", drop=drops.get(col),
                         kind=WORDS if col == "differing" else "fixed")
    return table


def _num(x: float) -> str:
    return f"{x:.3g}"


def _sortable(x: float) -> float:
    return float("inf") if x != x else x
