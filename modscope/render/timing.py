"""Rich renderable for per-layer timing: the slowest modules first, then how the layers add up."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import millis
from modscope.render.fit import WORDS, FitTable
from modscope.reports.timing import PassTiming, TimingReport


def timing_view(report: TimingReport, *, top: int | None = 20) -> Group:
    """The ``top`` slowest modules by self time (all with None) and a comparison with unhooked passes.

    Too narrow a width leaves out the p90 columns (forward, then backward), calls, the total times and the
    shares, in that order; the module and its self times always stay."""
    backward = report.backward is not None
    header = Text.assemble(
        ("Layer times ", "bold"), (report.model.type, "cyan"),
        f"  device {report.device}, {report.clock} (resolution {report.resolution_ns:.0f} ns), "
        f"median and p90 of {report.repeat} runs after {report.warmup} warm-up",
    )
    shown = report.layers if top is None else report.layers[:top]
    table = FitTable(title=f"Slowest {len(shown)} of {len(report.layers)} modules by self time (ms)")
    table.add_column("module", kind=WORDS)  # wraps between the name and its type, never inside the name
    columns = [("calls", 3, None), ("fwd self", None, None), ("p90", 1, "fwd p90"), ("fwd total", 4, None),
               ("share", 6, "fwd share")]
    if backward:
        columns += [("bwd self", None, None), ("p90", 2, "bwd p90"), ("bwd total", 5, None), ("share", 7, "bwd share")]
    for title, drop, name in columns:
        table.add_column(title, justify="right", drop=drop, name=name)
    for t in shown:
        flag = "~" if t.below_resolution else ""
        module = Text.assemble(t.name or "(root)", (f" {t.type}", "dim"))
        row = [module, str(t.calls), flag + millis(t.forward_self.median),
               millis(t.forward_self.p90), millis(t.forward_total.median), f"{t.forward_share:.1%}"]
        if backward:
            b = t.backward_self
            row += [millis(b and b.median), millis(b and b.p90),
                    millis(t.backward_total and t.backward_total.median),
                    "-" if t.backward_share is None else f"{t.backward_share:.1%}"]
        table.add_row(*row)
    parts = [header, table, _pass_line("forward", report.forward)]
    if report.clock_note:
        parts.insert(1, Text(f"  layers timed with {report.clock_note}", style="yellow"))
    if report.backward is not None:
        parts.append(_pass_line("backward", report.backward))
    held = [f"{name} {p.queued_ahead:.0%}" for name, p in (("forward", report.forward), ("backward", report.backward))
            if p is not None and p.queued_ahead is not None]
    if held:
        parts.append(Text(
            f"runs queued while the GPU was held back ({', '.join(held)}): their times are the GPU's work alone; "
            "the others also hold gaps where the GPU waited for the CPU", style="dim"))
    if any(t.below_resolution for t in shown):
        parts.append(Text("~ below the timer's resolution: treat as about zero", style="dim"))
    return Group(*parts)


def _pass_line(name: str, p: PassTiming) -> Text:
    return Text(
        f"{name}: unhooked {millis(p.bare.median)} ms (p90 {millis(p.bare.p90)}), while timing layers "
        f"{millis(p.hooked.median)} ms; per-layer self times add up to {millis(p.layer_sum)} ms = "
        f"{p.coverage:.0%} of the unhooked pass",
        style="dim",
    )
