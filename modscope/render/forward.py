"""Rich renderables for a summary with a forward pass: module table with shapes/calls/FLOPs, FLOP and memory
notes, fallbacks and the failure, if any."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import human_bytes, human_count, human_flops
from modscope.render.collapse import Row, group_children
from modscope.render.fit import WRAP, FitTable
from modscope.render.structure_text import call_str, clip, structure_str
from modscope.render.summary_tables import findings_view, module_table, shared_view, summary_title, totals_table
from modscope.reports import SummaryReport
from modscope.reports.forward import ForwardReport, MemoryEstimate, ModuleForward

_SHAPE_WIDTH = 36
_LISTED = 8


def forward_summary_view(report: SummaryReport, *, depth: int, collapse: bool = True) -> Group:
    """The summary of a model that was run: module table, totals, FLOPs, memory, notes, warnings."""
    forward = report.forward
    table = forward_table(report, depth=depth, collapse=collapse) if forward.modules else module_table(report, depth, collapse)
    parts = [table, totals_table(report), flops_view(forward)]
    if forward.memory is not None:
        parts.append(memory_view(forward.memory))
    notes = _notes(forward)
    if notes is not None:
        parts.append(notes)
    if report.shared:
        parts.append(shared_view(report))
    if report.warnings:
        parts.append(findings_view(report.warnings, title="Warnings"))
    if forward.failure is not None:
        parts.append(failure_view(forward))
    return Group(*parts)


def forward_table(report: SummaryReport, *, depth: int, collapse: bool = True) -> FitTable:
    """One row per module (to ``depth``): type, parameters, input and output shapes, calls, FLOPs.

    Too narrow a width leaves out input, calls, params, type, FLOPs and output, in that order."""
    forward = report.forward
    by_name = {m.name: m for m in report.modules}
    table = FitTable(title=summary_title(report))
    table.add_column("module")
    table.add_column("type", drop=4)
    table.add_column("params", justify="right", drop=3)
    table.add_column("input", kind=WRAP, drop=1)
    table.add_column("output", kind=WRAP, drop=6)
    table.add_column("calls", justify="right", drop=2)
    table.add_column("FLOPs", justify="right", drop=5)
    failed = forward.failure.module if forward.failure is not None else None
    rows = [(Row(by_name[""]), 0, [""])]
    while rows:
        row, level, members = rows.pop(0)
        _add_row(table, row, level, [forward.module(n) for n in members], failed)
        if row.module.depth < depth:
            kids = [by_name[c] for c in row.module.children]
            nested, start = [], 0
            for r in group_children(kids, collapse):  # runs are consecutive siblings
                nested.append((r, level + 1, list(row.module.children[start : start + r.count])))
                start += r.count
            rows[0:0] = nested
    return table


def _add_row(table: FitTable, row: Row, level: int, members: list[ModuleForward], failed: str | None) -> None:
    m, first = row.module, members[0]
    output = Text("FAILED", style="red") if failed is not None and failed in (e.name for e in members) else _call_output(first)
    each = f" x{row.count}" if row.count > 1 else ""
    params = "-" if not m.params_total else human_count(m.params_total) + (" each" if row.count > 1 else "")
    table.add_row(
        "  " * level + row.label,
        m.type + each,
        params,
        _call_inputs(first),
        output,
        _calls(members),
        _flops(members),
    )


def _call_inputs(entry: ModuleForward) -> str:
    if entry.first is None:
        return ""
    text = call_str(entry.first.args, entry.first.kwargs)
    if entry.variants:
        text += f" (+{len(entry.variants)} other)"
    return clip(text, _SHAPE_WIDTH)


def _call_output(entry: ModuleForward) -> str:
    if entry.first is None:
        return ""
    return structure_str(entry.first.output, _SHAPE_WIDTH)


def _calls(members: list[ModuleForward]) -> Text | str:
    calls = [e.calls for e in members]
    if any(c == 0 for c in calls):
        return Text("never" if all(c == 0 for c in calls) else f"{min(calls)}-{max(calls)}", style="yellow")
    if len(set(calls)) > 1:
        return f"{min(calls)}-{max(calls)}"
    return "" if calls[0] == 1 else str(calls[0])


def _flops(members: list[ModuleForward]) -> str:
    values = [e.flops for e in members]
    if values[0] is None:
        return "-"
    if len(members) > 1:
        if len(set(values)) == 1:
            return f"{human_flops(values[0])} each" if values[0] else ""
        return f"{human_flops(sum(values))} all"
    return human_flops(values[0]) if values[0] else ""


def flops_view(forward: ForwardReport) -> Text:
    """Total FLOPs and the ops that ran without a FLOP formula."""
    if forward.flops_total is None:
        return Text("FLOPs: not counted (--no-flops)", style="dim")
    text = Text.assemble(("FLOPs ", "bold"), f"{human_flops(forward.flops_total)} ({forward.flops_total:,})")
    if forward.flops_missed_ops:
        missed = ", ".join(forward.flops_missed_ops)
        text.append(f"  a lower bound: {missed} did multiply-adds with no FLOP formula", style="bold yellow")
    text.append("  torch.utils.flop_counter: matmul/conv/attention, 2 per multiply-add", style="dim")
    ops = forward.uncounted_ops
    if ops is None:
        text.append("\n  ops without a FLOP formula: unknown on this torch version", style="dim")
    elif ops:
        listed = ", ".join(f"{name} x{calls}" for name, calls in list(ops.items())[:_LISTED])
        more = f" and {len(ops) - _LISTED} more" if len(ops) > _LISTED else ""
        text.append(f"\n  counted as 0 (no formula): {listed}{more}", style="yellow")
    return text


def memory_view(memory: MemoryEstimate) -> Group:
    """Inference vs training bytes per category, by dtype, with the assumptions behind them."""
    table = FitTable(title=f"Memory estimate (optimizer: {memory.optimizer_name})")
    table.add_column("")
    table.add_column("inference", justify="right")
    table.add_column("training", justify="right")
    table.add_column("by dtype", kind=WRAP, drop=1)
    unknown = "?"

    def dtypes(key: str) -> str:
        split = memory.by_dtype.get(key, {})
        return ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]))

    table.add_row("parameters", human_bytes(memory.params), human_bytes(memory.params), dtypes("params"))
    table.add_row("buffers", human_bytes(memory.buffers), human_bytes(memory.buffers), dtypes("buffers"))
    table.add_row("gradients", "-", human_bytes(memory.gradients), dtypes("gradients"))
    table.add_row("optimizer state", "-", human_bytes(memory.optimizer), dtypes("optimizer"))
    training_acts = unknown if memory.activations is None else human_bytes(memory.activations)
    table.add_row("activations", human_bytes(memory.inference_activations), training_acts, dtypes("activations"))
    training_total = unknown if memory.training_total is None else human_bytes(memory.training_total)
    table.add_row(Text("total", style="bold"), human_bytes(memory.inference_total), training_total, "")
    assumptions = Text("\n".join(f"  - {a}" for a in memory.assumptions), style="dim")
    parts = [table]
    if memory.precisions:
        parts.append(precision_view(memory))
    return Group(*parts, Text("Assumptions:", style="dim"), assumptions)


def precision_view(memory: MemoryEstimate) -> FitTable:
    """The same estimate for the model stored in each precision: weights, inference, one training step.

    Too narrow a width leaves out the optimizers' columns from the last one back."""
    optimizers = list(memory.precisions[0].training)
    table = FitTable(
        title="Memory by precision (same inputs): weights, inference, one training step with each optimizer",
    )
    table.add_column("stored as")
    table.add_column("weights", justify="right")
    table.add_column("inference", justify="right")
    for rank, name in enumerate(optimizers):
        table.add_column(_OPTIMIZER_NAMES.get(name, name), justify="right", drop=len(optimizers) - rank)
    for row in memory.precisions:
        training = ["-" if row.training[name] is None else human_bytes(row.training[name]) for name in optimizers]
        table.add_row(row.precision, human_bytes(row.weights), human_bytes(row.inference), *training)
    return table


_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def _notes(forward: ForwardReport) -> Text | None:
    lines: list[tuple[str, str]] = []
    for note in forward.notes:
        lines.append((f"note: {note}", "dim"))
    for f in forward.fallbacks:
        lines.append((f"fallback: {f.module or '(root)'} ({f.type}) could not run on meta ({f.reason}); {f.action}", "yellow"))
    if forward.never_called:
        lines.append((f"never called in this pass: {_listing(forward.never_called)}", "yellow"))
    if forward.unused_parameters:
        lines.append((f"no gradient: {_listing(forward.unused_parameters)} (trainable, but the output does not depend on them)", "yellow"))
    if not lines:
        return None
    text = Text()
    for i, (line, style) in enumerate(lines):
        text.append(("\n" if i else "") + line, style=style)
    return text


def failure_view(forward: ForwardReport) -> Text:
    f = forward.failure
    message = f.message.strip().splitlines()[0] if f.message.strip() else ""
    return Text(
        f"FAILED in {f.module or '(root)'} ({f.type}) called with ({call_str(f.call.args, f.call.kwargs)}): "
        f"{f.error}: {message}\nRows above show what was recorded before the failure.",
        style="red",
    )


def _listing(names) -> str:
    shown = ", ".join(n or "(root)" for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
