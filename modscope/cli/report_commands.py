"""``modscope report``: everything about a model (or two checkpoints' diff) on one interactive HTML page."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from modscope.cli import checkpoint_commands
from modscope.cli.app import app
from modscope.cli.common import (
    ArgOpt,
    ArgsJsonOpt,
    BatchOpt,
    DebugOpt,
    DeviceOpt,
    InputOpt,
    InputsFnOpt,
    KeyOpt,
    KwargOpt,
    SeqLenOpt,
    Target,
    TrustOpt,
    WeightsOpt,
    as_chosen_meta,
    builds_on_meta,
    load_target,
    reporting_errors,
)

OutputOpt = Annotated[
    str,
    typer.Option("--output", "-o", metavar="FILE", help="The HTML file to write; '-' writes it to stdout."),
]


@app.command()
def report(
    target: Target,
    other: Annotated[
        Optional[str],
        typer.Argument(metavar="[B]", help="A second checkpoint: the page is the diff of TARGET and B.", show_default=False),
    ] = None,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    batch: BatchOpt = None,
    seq_len: SeqLenOpt = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    grads: Annotated[bool, typer.Option("--grads", help="Add the gradient flow of one backward pass (needs --input).")] = False,
    time: Annotated[bool, typer.Option("--time", help="Add per-layer self/total forward times (needs --input).")] = False,
    graph_depth: Annotated[
        Optional[int], typer.Option("--graph-depth", min=0, help="Draw the graph down to this depth only.")
    ] = None,
    no_graph: Annotated[bool, typer.Option("--no-graph", help="Leave the Graphviz graph out.")] = False,
    output: OutputOpt = "report.html",
    debug: DebugOpt = False,
) -> None:
    """One self-contained HTML page: module tree, graph, findings (and with --input shapes, FLOPs and the
    dataflow; --grads, --time). Given two checkpoints, their diff. Opens offline, from a file:// URL."""
    to_stdout = output == "-"
    with reporting_errors(debug, clean_stdout=to_stdout):
        from modscope.render.output import check_output_path

        if not to_stdout:
            check_output_path(output, "-o")  # a missing folder fails before any work
        if other is not None:
            from modscope.api.report import diff_page

            _write(diff_page(target, other, key=key, trust=trust), output)
            return
        if checkpoint_commands.is_checkpoint_target(target, weights):
            from modscope.errors import UsageError

            raise UsageError(
                f"{target} is a checkpoint: give a model TARGET (with --weights {target}), or a second checkpoint "
                "to compare it with"
            )
        import modscope
        from modscope.api.forward import check_device
        from modscope.api.report import model_page
        from modscope.cli.common import derived_inputs, given_inputs

        device = check_device(device)
        model_inputs, auto = given_inputs(input, kwarg, inputs, batch=batch, seq_len=seq_len, device=device or "cpu")
        if (grads or time) and model_inputs is None and not auto:
            from modscope.api.report import NEEDS_INPUTS
            from modscope.errors import UsageError

            raise UsageError(NEEDS_INPUTS)
        values = (model_inputs is not None or auto) and device != "meta"
        model_device = device if device != "cpu" else None
        model = load_target(target, arg, args_json, trust, device=model_device, weights=weights, key=key, values=values)
        if auto:
            model_inputs = derived_inputs(model, batch=batch, seq_len=seq_len, device=device or "cpu")
        summary = modscope.summary(model, inputs=model_inputs, device=device, target=target)
        if builds_on_meta(target, model_device, values=values, weights=weights):
            summary = as_chosen_meta(summary)
        page = model_page(
            model, summary, model_inputs, grads=grads, time=time, device=device, graph=not no_graph,
            graph_depth=graph_depth, target=target,
        )
        _write(page, output)


def _write(page, output: str) -> None:
    if output == "-":
        from modscope.cli.stdout import real_stdout

        out = real_stdout()  # user code's prints went to stderr until now
        out.write(page.html())
        out.flush()
        return
    path = page.save(output)
    sys.stderr.write(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)\n")
