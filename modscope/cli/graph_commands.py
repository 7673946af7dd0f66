"""``modscope graph``: the architecture as a Graphviz picture (module hierarchy, or dataflow with inputs)."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from modscope.cli.app import app
from modscope.cli.common import (
    ArgOpt,
    ArgsJsonOpt,
    DebugOpt,
    InputOpt,
    InputsFnOpt,
    JsonOpt,
    KwargOpt,
    Target,
    TrustOpt,
    emit,
    load_target,
    reporting_errors,
)


class Format(str, Enum):
    svg = "svg"
    png = "png"
    pdf = "pdf"
    dot = "dot"


class Color(str, Enum):
    none = "none"
    params = "params"


class Direction(str, Enum):
    TB = "TB"
    LR = "LR"


@app.command()
def graph(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="File to write (format from its suffix); default: DOT text on stdout."),
    ] = None,
    format: Annotated[
        Optional[Format], typer.Option("--format", "-f", help="svg, png, pdf (need Graphviz's dot) or dot.")
    ] = None,
    depth: Annotated[
        Optional[int], typer.Option("--depth", min=0, help="Draw modules below this depth as part of their ancestor.")
    ] = None,
    expand: Annotated[bool, typer.Option("--expand", help="Do not fold runs of identical blocks into one x N.")] = False,
    color: Annotated[Color, typer.Option("--color", help="Fill modules by: none, params (log scale).")] = Color.none,
    rankdir: Annotated[Direction, typer.Option("--rankdir", help="Layout direction: TB (top-down) or LR.")] = Direction.TB,
    dot_timeout: Annotated[
        Optional[float],
        typer.Option(
            "--dot-timeout", metavar="SECONDS",
            help="Stop Graphviz's dot after this long (exit 2); 0: no limit. Default: $MODSCOPE_DOT_TIMEOUT, else 120.",
        ),
    ] = None,
    json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Module hierarchy as nested boxes; with --input, the dataflow of one forward pass (shapes on edges)."""
    with reporting_errors(debug, clean_stdout=json or output is None):
        import modscope
        from modscope.cli.common import derived_inputs, given_inputs
        from modscope.cli.stdout import real_stdout
        from modscope.render.graph import layout_note, render_bytes, resolve_format
        from modscope.render.graphviz import dot_timeout as time_limit
        from modscope.render.output import check_output_path, write_output

        fmt = resolve_format(output, format.value if format else None)  # bad formats fail before loading
        limit = time_limit(dot_timeout)  # so does a bad --dot-timeout or $MODSCOPE_DOT_TIMEOUT
        if output is not None and not json:
            check_output_path(output, "-o")  # so does a missing folder
        model_inputs, auto = given_inputs(input, kwarg, inputs)
        model = load_target(target, arg, args_json, trust, values=model_inputs is not None or auto)
        if auto:  # --input auto: what a Hugging Face/timm config describes
            model_inputs = derived_inputs(model)
        result = modscope.graph(
            model, model_inputs, depth=depth, collapse=not expand, color=color.value, rankdir=rankdir.value,
            target=target,
        )
        if json:
            emit(result, as_json=True)
            return
        note = layout_note(result)
        if note:
            sys.stderr.write(f"modscope: note: {note}\n")
            sys.stderr.flush()
        data = result.source.encode() if fmt == "dot" else render_bytes(result.source, fmt, limit or 0)
        if output is None:
            out = real_stdout()  # the model's own prints went to stderr until now
            out.buffer.write(data)
            out.flush()
        else:
            write_output(output, data, "-o")
            sys.stderr.write(f"wrote {output} ({fmt}, {len(result.nodes)} nodes, {len(result.edges)} edges)\n")
