"""Rich renderable for NaN/Inf tracing: where the first non-finite value appeared, and its inputs' statistics."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import sci, shape_str
from modscope.render.fit import WORDS, FitTable
from modscope.reports.nonfinite import NonfiniteEvent, NonfiniteReport, Origin, TensorStats


def nonfinite_view(report: NonfiniteReport) -> Group:
    passes = f"{report.forward_passes} forward pass(es) checked"
    passes += ", backward checked" if report.checked_backward else ", backward not checked"
    parts = [Text.assemble(("NaN/Inf trace ", "bold"), (report.model.type, "cyan"), f"  {passes}")]
    if report.forward is not None:
        parts += _event_view(report.forward)
    else:
        parts.append(Text("forward: every module output is finite", style="green"))
    if report.loss is not None:
        style = "red" if report.loss_nonfinite else "dim"
        value = "-" if report.loss_value is None else sci(report.loss_value, 4)
        parts.append(Text(f"loss ({report.loss}): {value}", style=style))
    if report.backward is not None:
        parts += _event_view(report.backward)
    elif report.checked_backward:
        parts.append(Text("backward: every gradient checked is finite", style="green"))
    if report.error:
        parts.append(Text(f"the forward pass then raised {report.error}", style="yellow"))
    if report.ok:
        parts.append(Text("OK: no NaN or Inf found", style="green"))
    elif report.forward is None and report.backward is None:
        parts.append(Text("FAILED: the loss is not finite although every module output is", style="red"))
    else:
        parts.append(Text("FAILED: non-finite values found", style="red"))
    return Group(*parts)


def _event_view(event: NonfiniteEvent) -> list:
    where = event.module or "(root)"
    head = Text.assemble((f"{event.phase}: ", "bold red"), "first non-finite in ", (where, "bold"),
                         f" ({event.type}), {event.tensor}, pass {event.call}")
    lines = [head, Text("  " + _explain(event), style="yellow")]
    if event.phase == "backward":
        lines.append(Text(f"  gradient min {sci(event.min)}, max {sci(event.max)}", style="dim"))
    if event.later:
        what = "module outputs" if event.phase == "forward" else "gradients"
        lines.append(Text(f"  {event.later} more non-finite {what} followed in that pass", style="dim"))
    if event.inputs or event.outputs:
        lines.append(_stats_table(event.inputs + event.outputs))
    return lines


def _explain(event: NonfiniteEvent) -> str:
    if event.phase == "forward":
        if event.origin is Origin.INPUT:
            return ("its input was already non-finite: the value was made before this module ran, by code "
                    "outside any submodule (the parent's forward) or in the model's input")
        return "its inputs are finite: this module's own computation produced the NaN/Inf"
    if event.origin is Origin.DOWNSTREAM:
        if not event.module:
            return "the gradient arriving at the model's output is already non-finite: the loss produced it"
        return ("the gradient arriving at this module's output is already non-finite: code after it outside "
                "any submodule (the parent's forward) produced it")
    if event.tensor.startswith("grad of"):
        return "this module's backward turned a finite incoming gradient into a non-finite one"
    return "this parameter's gradient is non-finite (its module's backward produced it)"


def _stats_table(stats: tuple[TensorStats, ...]) -> FitTable:
    """Too narrow a width leaves out mean, dtype, min and max, in that order."""
    table = FitTable(box=False)
    table.add_column("  tensor", kind=WORDS)
    table.add_column("shape")
    table.add_column("dtype", drop=2)
    for col, drop in (("min", 3), ("max", 4), ("mean", 1), ("nan/+inf/-inf", None)):
        table.add_column(col, justify="right", drop=drop)
    for s in stats:
        label = "  " + s.label + (" (changed in place later)" if s.changed_in_place else "")
        style = "red" if s.nonfinite else ""
        table.add_row(Text(label, style=style), shape_str(s.shape), s.dtype, sci(s.min), sci(s.max), sci(s.mean),
                      Text(f"{s.nan}/{s.posinf}/{s.neginf}", style=style))
    return table
