"""Rich renderables for gradient reports: per-layer table, problem list, verdict; and a watched run's history."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from modscope.core.text import human_count, sci
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


def _layer_table(modules: tuple[ModuleGrad, ...]) -> Table:
    table = Table(title="Layers (parameters owned directly)", title_justify="left", show_edge=False)
    for col, justify in (("module", "left"), ("type", "left"), ("status", "left"), ("grad norm", "right"),
                         ("mean |g|", "right"), ("max |g|", "right"), ("tensors", "right")):
        table.add_column(col, justify=justify)
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


def _param_table(report: GradReport) -> Table:
    table = Table(title="Parameters", title_justify="left", show_edge=False)
    for col, justify in (("parameter", "left"), ("numel", "right"), ("status", "left"), ("grad norm", "right"),
                         ("max |g|", "right"), ("weight norm", "right"), ("grad/weight", "right")):
        table.add_column(col, justify=justify)
    for p in report.params:
        also = f" (= {', '.join(p.shared_with)})" if p.shared_with else ""
        table.add_row(p.name + also, human_count(p.numel), status_text(p.status), sci(p.norm), sci(p.max_abs),
                      sci(p.weight_norm), sci(p.ratio))
    return table


def _problem_table(report: GradReport) -> Table:
    table = Table(title="Problems", title_justify="left", show_edge=False)
    table.add_column("parameter")
    table.add_column("status")
    table.add_column("meaning", overflow="fold")
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
    params = Table(title="Parameters (norm over the steps with a finite gradient)", title_justify="left",
                   show_edge=False)
    for col, justify in (("parameter", "left"), ("status", "left"), ("steps", "right"), ("no grad", "right"),
                         ("min", "right"), ("mean", "right"), ("max", "right"), ("last", "right")):
        params.add_column(col, justify=justify)
    for p in report.params:
        if p.status is GradStatus.FROZEN:
            continue
        params.add_row(p.name, status_text(p.status), str(p.steps_with_grad), str(p.no_grad_steps),
                       sci(p.norm_min), sci(p.norm_mean), sci(p.norm_max), sci(p.norm_last))
    steps = Table(title=f"Last {min(last, len(report.steps))} step(s)", title_justify="left", show_edge=False)
    for col, justify in (("step", "right"), ("total norm", "right"), ("largest", "right"), ("in", "left"),
                         ("no grad", "right"), ("zero", "right"), ("nonfinite", "right")):
        steps.add_column(col, justify=justify)
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
