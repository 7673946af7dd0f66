"""Commands for training-time debugging: grads (gradient flow), nan (NaN/Inf tracing), time (per-layer timing)."""
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
    BatchOpt,
    DebugOpt,
    InputOpt,
    InputsFnOpt,
    JsonOpt,
    KeyOpt,
    KwargOpt,
    SeqLenOpt,
    Target,
    TrustOpt,
    WeightsOpt,
    WidthOpt,
    emit,
    load_target,
    reporting_errors,
)
from modscope.errors import EXIT_FINDINGS, UsageError


class Loss(str, Enum):  # mirrors modscope.collect.training.loss.LossKind without importing torch at start-up
    SUM = "sum"
    MEAN = "mean"
    CROSS_ENTROPY = "cross-entropy"


LossOpt = Annotated[
    Loss,
    typer.Option("--loss", help="How the output becomes a scalar: sum, mean, or cross-entropy (first output = "
                 "logits (N, C, ...))."),
]
LossTargetOpt = Annotated[
    Optional[str],
    typer.Option("--target", help="Cross-entropy class indices as SHAPE:DTYPE[low,high), e.g. 8:int64[0,10) "
                 "(default: random classes).", show_default=False),
]


def _model_and_inputs(
    target, arg, args_json, trust, weights, key, input, kwarg, inputs_fn, command: str, batch=None, seq_len=None
):
    """The model (with weights) and its inputs: the given ones, else what a Hugging Face/timm config describes."""
    from modscope.cli.common import derived_inputs, given_inputs

    model_inputs, _ = given_inputs(input, kwarg, inputs_fn, batch=batch, seq_len=seq_len)
    model = load_target(target, arg, args_json, trust, weights=weights, key=key)
    if model_inputs is None:
        model_inputs = derived_inputs(model, batch=batch, seq_len=seq_len, needed_by=command)
    return model, model_inputs


def _loss_target(spec: str | None, loss: Loss):
    if spec is None:
        return None
    if loss is not Loss.CROSS_ENTROPY:
        raise UsageError("--target applies to --loss cross-entropy only")
    from modscope.load.inputs import parse_tensor_spec

    return parse_tensor_spec(spec).make()


@app.command()
def grads(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    batch: BatchOpt = None,
    seq_len: SeqLenOpt = None,
    loss: LossOpt = Loss.MEAN,
    loss_target: LossTargetOpt = None,
    vanishing: Annotated[float, typer.Option("--vanishing", help="A gradient norm below this is vanishing.")] = 1e-8,
    exploding: Annotated[float, typer.Option("--exploding", help="A gradient norm above this is exploding.")] = 1e3,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also draw the gradient flow into FILE.png/.svg/.pdf "
                                     "(needs matplotlib: pip install 'modscope[plot]').", show_default=False)
    ] = None,
    params: Annotated[bool, typer.Option("--params", help="List every parameter, not only the layers.")] = False,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Gradient flow after one forward and backward pass; exit 1 on missing, zero or non-finite gradients.

    Every parameter gets a verdict: ok, frozen, no_grad, zero, vanishing, exploding or nonfinite. Frozen
    parameters are not problems; vanishing/exploding are warnings. .grad is left untouched.
    """
    with reporting_errors(debug, clean_stdout=json):
        import modscope
        from modscope.cli.progress import progress
        from modscope.render.grads import grads_view
        from modscope.reports.grads import GradThresholds

        if not 0 <= vanishing < exploding:
            raise UsageError("--vanishing must be >= 0 and below --exploding")
        if plot is not None:
            from modscope.render.output import check_output_path

            check_output_path(plot, "--plot")  # a missing folder fails before the model is built
        with progress(json) as shown:
            shown.stage("building the model")
            model, model_inputs = _model_and_inputs(
                target, arg, args_json, trust, weights, key, input, kwarg, inputs, "grads", batch, seq_len
            )
            shown.stage("forward and backward pass")
            report = modscope.grads(
                model, model_inputs, loss=loss.value, target=_loss_target(loss_target, loss),
                thresholds=GradThresholds(vanishing=vanishing, exploding=exploding), name=target,
            )
        if plot is not None:
            from modscope.render.grad_plot import save_grad_plot

            sys.stderr.write(f"modscope: wrote {save_grad_plot(report, plot)}\n")
        emit(report, as_json=json, view=grads_view(report, params=params), width=width)
    if not report.ok:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def nan(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    batch: BatchOpt = None,
    seq_len: SeqLenOpt = None,
    loss: LossOpt = Loss.MEAN,
    loss_target: LossTargetOpt = None,
    backward: Annotated[bool, typer.Option("--backward/--no-backward", help="Also trace gradients.")] = True,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The first NaN/Inf in forward and in backward; exit 1 when one is found.

    Names the first module whose output is non-finite, with statistics of its inputs, and the first module
    whose gradient becomes non-finite.
    """
    with reporting_errors(debug, clean_stdout=json):
        import modscope
        from modscope.cli.progress import progress

        with progress(json) as shown:
            shown.stage("building the model")
            model, model_inputs = _model_and_inputs(
                target, arg, args_json, trust, weights, key, input, kwarg, inputs, "nan", batch, seq_len
            )
            shown.stage("forward and backward pass, watching for NaN/Inf" if backward else
                        "forward pass, watching for NaN/Inf")
            report = modscope.find_nonfinite(
                model, model_inputs, loss=loss.value, target=_loss_target(loss_target, loss), backward=backward,
                name=target,
            )
        emit(report, as_json=json, width=width)
    if not report.ok:
        raise typer.Exit(EXIT_FINDINGS)


class Device(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"


class CudaClockChoice(str, Enum):
    AUTO = "auto"
    EVENTS = "events"


@app.command()
def time(
    target: Target,
    arg: ArgOpt = None,
    args_json: ArgsJsonOpt = None,
    trust: TrustOpt = False,
    weights: WeightsOpt = None,
    key: KeyOpt = None,
    input: InputOpt = None,
    kwarg: KwargOpt = None,
    inputs: InputsFnOpt = None,
    batch: BatchOpt = None,
    seq_len: SeqLenOpt = None,
    device: Annotated[Device, typer.Option("--device", help="Where to run: cpu, or cuda (the current GPU).")] = Device.CPU,
    backward: Annotated[bool, typer.Option("--backward", help="Also time each module's backward.")] = False,
    loss: LossOpt = Loss.MEAN,
    loss_target: LossTargetOpt = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Timed runs (median and p90 over them).")] = 10,
    top: Annotated[int, typer.Option("--top", min=0, help="Show the K slowest modules (0: all).")] = 20,
    clock: Annotated[CudaClockChoice, typer.Option(
        "--clock", help="On CUDA: auto (kernel timestamps from CUPTI where torch's profiler has them, else "
        "events) or events (a CUDA event at every module boundary).")] = CudaClockChoice.AUTO,
    json: JsonOpt = False,
    width: WidthOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Per-module self and total time, forward and optionally backward, slowest first.

    CPU times come from perf_counter_ns; GPU times from CUPTI's kernel timestamps, or CUDA events (one
    synchronisation per iteration either way).
    """
    with reporting_errors(debug, clean_stdout=json):
        import modscope
        from modscope.cli.progress import progress
        from modscope.render.timing import timing_view

        with progress(json) as shown:
            shown.stage("building the model")
            model, model_inputs = _model_and_inputs(
                target, arg, args_json, trust, weights, key, input, kwarg, inputs, "time", batch, seq_len
            )
            passes = "forward and backward" if backward else "forward"
            report = modscope.time_layers(
                model, model_inputs, device=device.value, backward=backward, warmup=warmup, repeat=repeat,
                loss=loss.value, target=_loss_target(loss_target, loss), name=target, clock=clock.value,
                progress=shown.counter(f"timing {passes} ({warmup} warm-up + {repeat} runs)"),
            )
        emit(report, as_json=json, view=timing_view(report, top=top or None), width=width)
