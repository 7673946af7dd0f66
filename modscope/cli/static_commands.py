"""Inspection commands: summary (static, plus one forward pass when given inputs), tree, shared, audit."""
from __future__ import annotations

from enum import Enum
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
    JsonOpt,
    KeyOpt,
    KwargOpt,
    SeqLenOpt,
    Target,
    TrainModeOpt,
    TrustOpt,
    WeightsOpt,
    WidthOpt,
    as_chosen_meta,
    builds_on_meta,
    load_target,
    reporting_errors,
)
from modscope.cli.distributed import BackendOpt, DistributedOpt, DistTimeoutOpt, printing_rank, session
from modscope.errors import EXIT_FINDINGS

DepthOpt = Annotated[Optional[int], typer.Option("--depth", min=0, help="Show modules down to this depth.")]
ExpandOpt = Annotated[bool, typer.Option("--expand", help="Do not collapse runs of identical sibling modules.")]


class Optimizer(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


@app.command()
def summary(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    batch: BatchOpt = None,
    seq_len: SeqLenOpt = None,
    device: DeviceOpt = None,
    train_mode: TrainModeOpt = False,
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Do not count FLOPs (a faster pass).")] = False,
    no_memory: Annotated[
        bool, typer.Option("--no-memory", help="Skip the memory estimate (and its autograd measuring pass).")
    ] = False,
    optimizer: Annotated[
        Optimizer, typer.Option("--optimizer", help="Optimizer whose state the training memory estimate includes.")
    ] = Optimizer.adam,
    depth: DepthOpt = None,
    expand: ExpandOpt = False,
    tensors: Annotated[bool, typer.Option("--tensors", help="List every parameter and buffer.")] = False,
    no_values: Annotated[
        bool, typer.Option("--no-values", help="Skip the NaN/Inf scan of the weights (reads no tensor data).")
    ] = False,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    distributed: DistributedOpt = None,
    backend: BackendOpt = None,
    dist_timeout: DistTimeoutOpt = 300.0,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Parameters vs buffers, per-module counts, sharing and hazards (of a model, or of a checkpoint alone);
    with --input, also one forward pass: shapes, calls, FLOPs and a memory estimate. Exit 2 when the forward
    pass fails (the partial report is still printed).

    Under torchrun every rank builds the model and rank 0 prints one report merged over all ranks."""
    with reporting_errors(debug):
        checkpoint = checkpoint_commands.is_checkpoint_target(target, weights)
    if checkpoint:
        with reporting_errors(debug, clean_stdout=json):
            if printing_rank(distributed):
                checkpoint_commands.checkpoint_summary(target, key, trust, depth, expand, tensors, json, width)
            return
    with reporting_errors(debug, clean_stdout=json), session(distributed, backend, dist_timeout) as job:
        from modscope.api.forward import check_device
        from modscope.cli.common import derived_inputs, given_inputs
        from modscope.cli.progress import progress
        from modscope.errors import ForwardError, UsageError
        from modscope.load.hub import hub_kind

        device = check_device(device)
        model_inputs, auto = given_inputs(input, kwarg, inputs, batch=batch, seq_len=seq_len, device=device or "cpu")
        if device is None and weights is None and hub_kind(target) is not None and (model_inputs is not None or auto):
            device = "meta"  # a Hugging Face/timm architecture with no weights: nothing a CPU pass would add
            chosen_meta = True
        else:
            chosen_meta = False
        values = (model_inputs is not None or auto) and device != "meta"
        with progress(json or job.active) as shown:  # ranks of a distributed job draw none
            shown.stage("building the model")
            model = job.build(
                lambda: load_target(
                    target, arg, args_json, trust, device=device if device != "cpu" else None, weights=weights,
                    key=key, values=values,
                )
            )
            if auto:
                model_inputs = derived_inputs(model, batch=batch, seq_len=seq_len, device=device or "cpu")
            if model_inputs is None and train_mode:
                raise UsageError("--train-mode needs a forward pass: give --input, --kwarg or --inputs")
            if model_inputs is not None and job.active:
                raise UsageError("--input runs in one process: drop torchrun/--distributed for the forward analysis")
            options = dict(depth=depth, expand=expand, tensors=tensors, json=json, width=width)
            analysis = dict(target=target, check_values=not no_values)
            if model_inputs is not None:
                analysis.update(
                    inputs=model_inputs, device=device, train_mode=train_mode, flops=not no_flops,
                    memory=not no_memory, optimizer=optimizer.value,
                )
            memory_too = "" if no_memory else " and the memory estimate"
            shown.stage("counting parameters and buffers" if model_inputs is None else
                        f"counting parameters, then one forward pass{memory_too}")
            try:
                report, failed = job.summary(model, **analysis), None
            except ForwardError as exc:
                report, failed = None, exc
        if failed is not None:
            if failed.partial is not None:
                _emit_summary(job, failed.partial, **options)
            raise failed
        if report is not None:  # None on the ranks that do not print
            if chosen_meta or builds_on_meta(target, device if device != "cpu" else None, values=values,
                                             weights=weights):
                report = as_chosen_meta(report)
            fit = _weights_fit(model, target) if weights is None and not values else None
            _emit_summary(job, report, fit=fit, **options)


def _weights_fit(model, target: str):
    """For a Hugging Face folder holding weights: would they load (the ``check`` dry run, headers only)?"""
    import modscope
    from modscope.cli.common import default_weights

    found = default_weights(target)
    return None if found is None else modscope.check(model, found, target=target)


def _emit_summary(job, report, *, depth, expand, tensors, json, width=None, fit=None) -> None:
    from rich.console import Group

    from modscope.render.checkpoint import compat_view
    from modscope.render.console import DEFAULT_DEPTH, summary_view, tensor_table

    view = summary_view(report, depth=DEFAULT_DEPTH if depth is None else depth, collapse=not expand)
    if tensors:
        view = Group(view, tensor_table(report))
    if fit is not None:  # a Hugging Face folder's weights, checked against the architecture
        view = Group(view, compat_view(fit))
        report = report.to_dict() | {"weights": fit.to_dict()}
    job.emit(report, as_json=json, view=view, width=width)


@app.command()
def tree(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    depth: DepthOpt = None,
    expand: ExpandOpt = False,
    key: KeyOpt = None,
    distributed: DistributedOpt = None,
    backend: BackendOpt = None,
    dist_timeout: DistTimeoutOpt = 300.0,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The submodule tree with types and parameter counts (or a checkpoint's names as a tree)."""
    with reporting_errors(debug):
        checkpoint = checkpoint_commands.is_checkpoint_target(target)
    if checkpoint:
        with reporting_errors(debug, clean_stdout=json):
            if printing_rank(distributed):
                checkpoint_commands.checkpoint_tree(target, key, trust, depth, expand, json, width)
            return
    with reporting_errors(debug, clean_stdout=json), session(distributed, backend, dist_timeout) as job:
        import modscope
        from modscope.render.console import tree_view

        model = job.build(lambda: load_target(target, arg, args_json, trust, values=False))
        report = job.on_main(lambda: modscope.summary(model, target=target))
        if report is None:
            return
        job.emit(_tree_document(report) if json else report, as_json=json, view=tree_view(
            report, depth=depth, collapse=not expand
        ), width=width)


def _tree_document(report) -> dict:
    return {
        "schema": "modscope.tree/1",
        "model": {"type": report.model.type, "target": report.model.target},
        "modules": [m.to_dict() | {"children": list(m.children)} for m in report.modules],
    }


@app.command()
def shared(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    distributed: DistributedOpt = None,
    backend: BackendOpt = None,
    dist_timeout: DistTimeoutOpt = 300.0,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Tied parameters, aliased storage and submodules registered under several names."""
    with reporting_errors(debug, clean_stdout=json), session(distributed, backend, dist_timeout) as job:
        from rich.text import Text

        import modscope
        from modscope.render.summary_tables import shared_view

        model = job.build(lambda: load_target(target, arg, args_json, trust, values=False))
        report = job.on_main(lambda: modscope.summary(model, target=target))
        if report is None:
            return
        document = {
            "schema": "modscope.shared/1",
            "model": {"type": report.model.type, "target": report.model.target},
            "shared": [g.to_dict() for g in report.shared],
        }
        view = shared_view(report) if report.shared else Text("nothing shared: every tensor and module has one name")
        job.emit(document if json else None, as_json=json, view=view, width=width)


@app.command()
def audit(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    expect_device: Annotated[
        Optional[str], typer.Option("--expect-device", help="Every tensor must be on this device (cpu, cuda, cuda:1).")
    ] = None,
    expect_dtype: Annotated[
        Optional[str], typer.Option("--expect-dtype", help="Every floating tensor must have this dtype.")
    ] = None,
    allow: Annotated[
        Optional[list[str]],
        typer.Option(
            "--allow",
            help="Accept a finding code (e.g. mixed_training_mode: listed as info, no exit 1), or with "
            "--expect-dtype a name/type substring exempt from it (e.g. norm); repeatable.",
        ),
    ] = None,
    distributed: DistributedOpt = None,
    backend: BackendOpt = None,
    dist_timeout: DistTimeoutOpt = 300.0,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Devices, dtypes, train/eval modes and non-finite weights. Exit 1 when an error is found."""
    with reporting_errors(debug, clean_stdout=json), session(distributed, backend, dist_timeout) as job:
        model = job.build(lambda: load_target(target, arg, args_json, trust))
        report = job.audit(
            model, expect_device=expect_device, expect_dtype=expect_dtype, allow=allow or (), target=target
        )
        if report is None:
            return
        job.emit(report, as_json=json, width=width)
        if not report.ok:
            job.exit_code = EXIT_FINDINGS
