"""Commands about checkpoints: ``diff A B``, ``check TARGET --weights CKPT``, and ``summary``/``tree`` of a
checkpoint alone (reached from the static commands when their TARGET is a checkpoint file or folder)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from modscope.cli.app import app
from modscope.cli.completion import complete_path, complete_target
from modscope.cli.common import (
    ArgOpt,
    ArgsJsonOpt,
    DebugOpt,
    JsonOpt,
    KeyOpt,
    Target,
    TrustOpt,
    WidthOpt,
    emit,
    reporting_errors,
)
from modscope.errors import EXIT_FINDINGS, EXIT_OK, UsageError

Source = Annotated[
    str,
    typer.Argument(
        help="A checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, *.index.json, a DCP folder) or a model TARGET.",
        show_default=False,
        autocompletion=complete_target,
    ),
]
AllOpt = Annotated[bool, typer.Option("--all", help="List every name instead of the first 20 of each kind.")]


@app.command()
def diff(
    a: Source,
    b: Source,
    key: KeyOpt = None,
    key_a: Annotated[Optional[str], typer.Option("--key-a", help="--key for A only.", show_default=False)] = None,
    key_b: Annotated[Optional[str], typer.Option("--key-b", help="--key for B only.", show_default=False)] = None,
    keys_only: Annotated[
        bool, typer.Option("--keys-only", help="Compare names, shapes and dtypes only: read no tensor data.")
    ] = False,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance, as torch.isclose.")] = 0.0,
    atol: Annotated[float, typer.Option("--atol", min=0.0, help="Absolute tolerance, as torch.isclose.")] = 0.0,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    all_: AllOpt = False,
    html: Annotated[
        Optional[str],
        typer.Option("--html", metavar="FILE", help="Also write the diff as an interactive HTML page (modscope report A B).",
                     show_default=False),
    ] = None,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare two state dicts. Exit 0 identical, 1 different, 2 error (like diff)."""
    with reporting_errors(debug, clean_stdout=json):
        import modscope
        from modscope.checkpoint import open_checkpoint
        from modscope.cli.progress import progress
        from modscope.load.target import parse_constructor_args
        from modscope.render.diff import diff_view

        kwargs = parse_constructor_args(arg or (), args_json)
        if html is not None:
            from modscope.render.output import check_output_path

            check_output_path(html, "--html")  # a missing folder fails before the tensors are read
        with open_checkpoint(a, key=key_a or key, trust=trust, kwargs=kwargs) as left, open_checkpoint(
            b, key=key_b or key, trust=trust, kwargs=kwargs
        ) as right, progress(json, unit="bytes") as shown:
            report = modscope.diff(left, right, rtol=rtol, atol=atol, keys_only=keys_only,
                                   progress=shown.counter("comparing values"))
        if html is not None:
            from modscope.reports.page import ModelPage

            path = ModelPage(title=f"diff {a} {b}", diff=report).save(html)
            sys.stderr.write(f"wrote {path}\n")
        emit(report, as_json=json, view=diff_view(report, limit=None if all_ else 20), width=width)
    raise typer.Exit(EXIT_OK if report.identical else EXIT_FINDINGS)


@app.command()
def check(
    target: Target,
    weights: Annotated[
        Optional[str],
        typer.Option("--weights", metavar="CKPT", help="The checkpoint to check against TARGET (default for a Hugging "
                     "Face folder: its own weights).", show_default=False, autocompletion=complete_path),
    ] = None,
    key: KeyOpt = None,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    all_: AllOpt = False,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Would CKPT load into TARGET with load_state_dict(strict=True)? A dry run; exit 0 when it would, else 1."""
    with reporting_errors(debug, clean_stdout=json):
        import modscope
        from modscope.cli.common import default_weights
        from modscope.load.target import parse_constructor_args
        from modscope.render.checkpoint import compat_view

        kwargs = parse_constructor_args(arg or (), args_json)
        weights = weights or default_weights(target)
        if weights is None:
            raise UsageError("check needs the checkpoint to check: give --weights CKPT")
        report = modscope.check(target, weights, key=key, trust=trust, kwargs=kwargs)
        emit(report, as_json=json, view=compat_view(report, limit=None if all_ else 20), width=width)
    if not report.ok:
        raise typer.Exit(EXIT_FINDINGS)


def is_checkpoint_target(target: str, weights: str | None = None) -> bool:
    """Whether a summary/tree TARGET is a checkpoint (file or folder) rather than a model (a Hugging Face
    folder is a model: its architecture, with its weights checked against it)."""
    from modscope.checkpoint import is_checkpoint_path
    from modscope.load.hub import is_hub_target

    if is_hub_target(target) or not is_checkpoint_path(target):
        return False
    if weights is not None:
        raise UsageError(f"--weights loads a checkpoint into a model, but {target} is itself a checkpoint")
    return True


def checkpoint_summary(target, key, trust, depth, expand, tensors, as_json, width=None) -> None:
    from rich.console import Group

    from modscope.render.checkpoint import checkpoint_summary_view, stored_tensor_table
    from modscope.render.summary_tables import DEFAULT_DEPTH

    report = _summarize(target, key, trust)
    view = checkpoint_summary_view(report, depth=DEFAULT_DEPTH if depth is None else depth, collapse=not expand)
    emit(report, as_json=as_json, view=Group(view, stored_tensor_table(report)) if tensors else view, width=width)


def checkpoint_tree(target, key, trust, depth, expand, as_json, width=None) -> None:
    from modscope.render.checkpoint import checkpoint_tree_view

    report = _summarize(target, key, trust)
    document = {
        "schema": "modscope.checkpoint_tree/1",
        "checkpoint": report.checkpoint.to_dict(),
        "tree": [n.to_dict() for n in report.nodes],
    }
    if report.layout is not None:
        document["layout"] = report.layout.to_dict()
    view = checkpoint_tree_view(report, depth=depth, collapse=not expand)
    emit(document if as_json else None, as_json=as_json, view=view, width=width)


def _summarize(target, key, trust):
    import modscope

    return modscope.inspect_checkpoint(target, key=key, trust=trust)

