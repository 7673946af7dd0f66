"""Rich renderables for gradient reports: per-layer table, problem list, verdict; and a watched run's history."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import human_count, sci
from modscope.render.fit import PROSE, WORDS, FitTable
from modscope.reports.grads import GradReport, GradStatus, GradWatchReport, ModuleGrad

STYLE = {
    GradStatus.NONFINITE: "bold red",
    GradStatus.NO_GRAD: "red",
    GradStatus.ZERO: "red",
    GradStatus.EXPLODING: "yellow",
    GradStatus.VANISHING: "yellow",
    GradStatus.OK: "green",
    GradStatus.FROZEN: "blue",
}

MEANING = {
    GradStatus.NONFINITE: "NaN or Inf in the gradient",
    GradStatus.NO_GRAD: "no gradient: unused in forward, or detached",
    GradStatus.ZERO: "gradient is exactly zero",
    GradStatus.EXPLODING: "gradient norm above the exploding bound",
    GradStatus.VANISHING: "gradient norm below the vanishing bound",
}


def status_text(status: GradStatus) -> Text:
    return Text(status.value, style=STYLE[status])


def grads_view(report: GradReport, *, params: bool = False) -> Group:
    """Per-layer gradient table (runs of frozen layers folded), problems, thresholds and verdict."""
    loss = "no gradient-carrying output" if report.loss_value is None else sci(report.loss_value, 4)
    header = Text.assemble(("Gradients ", "bold"), (report.model.type, "cyan"),
                           f"  loss={report.loss} ({loss})")
    parts = [header, _layer_table(report.modules)]
    if params:
        parts.append(_param_table(report))
    if report.problems:
        parts.append(_problem_table(report))
    parts.append(_thresholds_line(report.thresholds))
    parts.append(_verdict(report.ok, report.counts(), len(report.problems)))
    return Group(*parts)


def _layer_table(modules: tuple[ModuleGrad, ...]) -> FitTable:
    """Too narrow a width leaves out tensors, mean |g|, max |g| and type, in that order."""
    table = FitTable(title="Layers (parameters owned directly)")
    for col, justify, drop, kind in (("module", "left", None, WORDS), ("type", "left", 4, WORDS),
                                     ("status", "left", None, "fixed"), ("grad norm", "right", None, "fixed"),
                                     ("mean |g|", "right", 2, "fixed"), ("max |g|", "right", 3, "fixed"),
                                     ("tensors", "right", 1, "fixed")):
        table.add_column(col, justify=justify, drop=drop, kind=kind)
    i = 0
    while i < len(modules):
        j = i
        while j < len(modules) and modules[j].status is GradStatus.FROZEN:
            j += 1
        if j - i >= 2:  # fold a run of frozen layers into one row
            span = f"{modules[i].name} … {modules[j - 1].name}"
            table.add_row(Text(f"{j - i} frozen layers", style="dim"), Text(span, style="dim"),
                          status_text(GradStatus.FROZEN), "-", "-", "-",
                          str(sum(m.params for m in modules[i:j])))
            i = j
            continue
        m = modules[i]
        table.add_row(m.name or "(root)", m.type, status_text(m.status), sci(m.norm), sci(m.mean_abs),
                      sci(m.max_abs), str(m.params))
        i += 1
    return table


def _param_table(report: GradReport) -> FitTable:
    """Too narrow a width leaves out weight norm, max |g|, numel and grad/weight, in that order."""
    table = FitTable(title="Parameters")
    for col, justify, drop in (("parameter", "left", None), ("numel", "right", 3), ("status", "left", None),
                               ("grad norm", "right", None), ("max |g|", "right", 2), ("weight norm", "right", 1),
                               ("grad/weight", "right", 4)):
        table.add_column(col, justify=justify, drop=drop, kind=WORDS if col == "parameter" else "fixed")
    for p in report.params:
        also = f" (= {', '.join(p.shared_with)})" if p.shared_with else ""
        table.add_row(p.name + also, human_count(p.numel), status_text(p.status), sci(p.norm), sci(p.max_abs),
                      sci(p.weight_norm), sci(p.ratio))
    return table


def _problem_table(report: GradReport) -> FitTable:
    table = FitTable(title="Problems")
    table.add_column("parameter", kind=WORDS)
    table.add_column("status")
    table.add_column("meaning", kind=PROSE)
    for p in report.problems:
        table.add_row(p.name, status_text(p.status), MEANING[p.status])
    return table


def _thresholds_line(thresholds) -> Text:
    return Text(f"thresholds (L2 norm of each parameter's gradient): vanishing < {thresholds.vanishing:g}, "
                f"exploding > {thresholds.exploding:g}", style="dim")


def _verdict(ok: bool, counts: dict[str, int], problems: int) -> Text:
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    if ok:
        return Text(f"OK: every trainable parameter has a finite, non-zero gradient ({tally})", style="green")
    return Text(f"FAILED: {problems} trainable parameter(s) with no_grad/zero/nonfinite gradients ({tally})",
                style="red")


def watch_view(report: GradWatchReport, *, last: int = 10) -> Group:
    """Per-parameter running statistics and the last ``last`` steps of a watched run."""
    header = Text.assemble(("Gradient watch ", "bold"), (report.model.type, "cyan"),
                           f"  {len(report.steps)} step(s), one per {report.step_on} call")
    params = FitTable(title="Parameters (norm over the steps with a finite gradient)")
    for col, justify, drop in (("parameter", "left", None), ("status", "left", None), ("steps", "right", 2),
                               ("no grad", "right", 3), ("min", "right", 4), ("mean", "right", 1),
                               ("max", "right", 5), ("last", "right", None)):
        params.add_column(col, justify=justify, drop=drop)
    for p in report.params:
        if p.status is GradStatus.FROZEN:
            continue
        params.add_row(p.name, status_text(p.status), str(p.steps_with_grad), str(p.no_grad_steps),
                       sci(p.norm_min), sci(p.norm_mean), sci(p.norm_max), sci(p.norm_last))
    steps = FitTable(title=f"Last {min(last, len(report.steps))} step(s)")
    for col, justify, drop in (("step", "right", None), ("total norm", "right", None), ("largest", "right", 4),
                               ("in", "left", 5), ("no grad", "right", 3), ("zero", "right", 2),
                               ("nonfinite", "right", 1)):
        steps.add_column(col, justify=justify, drop=drop)
    for s in report.steps[-last:]:
        steps.add_row(str(s.step), sci(s.total_norm), sci(s.max_norm), s.max_norm_param, str(s.no_grad),
                      str(s.zero), str(s.nonfinite))
    frozen = sum(1 for p in report.params if p.status is GradStatus.FROZEN)
    notes = [_thresholds_line(report.thresholds)]
    if frozen:
        notes.append(Text(f"{frozen} frozen parameter tensor(s) not watched", style="dim"))
    if not report.steps:
        notes.append(Text("no steps recorded: run a backward pass inside the with block", style="yellow"))
    return Group(header, params, steps, *notes, _verdict(report.ok, report.counts(), len(report.problems)))
