"""What every command shares: option types, model loading from options, error reporting, output."""
from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Annotated, Optional

import typer

from modscope.errors import EXIT_USAGE, ModscopeError

EXIT_INTERNAL = 3

Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="file.py:Name, package.module:Name (class, factory or instance), or a saved TorchScript/pickled model.",
        show_default=False,
    ),
]
ArgOpt = Annotated[
    Optional[list[str]],
    typer.Option("--arg", help="Constructor argument key=value (Python literal); repeatable.", show_default=False),
]
ArgsJsonOpt = Annotated[
    Optional[str], typer.Option("--args-json", help="Constructor arguments as a JSON object.", show_default=False)
]
# Forward-pass inputs, shared by every command that runs the model (summary, grads, nan, time, graph).
InputOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--input",
        help="Positional input SHAPE[:DTYPE], e.g. 1,3,224,224 or 1,128:int64[0,32000); repeatable.",
        show_default=False,
    ),
]
KwargOpt = Annotated[
    Optional[list[str]],
    typer.Option("--kwarg", help="Keyword input name=SHAPE[:DTYPE]; repeatable.", show_default=False),
]
InputsFnOpt = Annotated[
    Optional[str],
    typer.Option("--inputs", help="file.py:make_inputs returning a tensor, tuple or dict.", show_default=False),
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        metavar="CKPT",
        help="Load this checkpoint into the model first (strict); any format modscope reads.",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    Optional[str],
    typer.Option(
        "--key",
        help="Which state dict inside a nested checkpoint: state_dict, model, ema ... (listed when ambiguous).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        help="Run the forward pass on cpu, cuda[:N] or meta (meta: no weights are allocated; shapes and FLOPs only).",
        show_default=False,
    ),
]
TrainModeOpt = Annotated[
    bool, typer.Option("--train-mode", help="Run the pass in training mode with autograd on (default: eval, no_grad).")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Allow unpickling whole-model files (this runs code from the file).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


@contextlib.contextmanager
def reporting_errors(debug: bool):
    """Turn exceptions into one stderr line and an exit code (a traceback too with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except ModscopeError as exc:
        if debug:
            traceback.print_exc()
        _error_line(str(exc))
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        _error_line("interrupted")
        raise typer.Exit(130)
    except Exception as exc:  # a bug in modscope or an unexpected failure inside the user's model
        if debug:
            traceback.print_exc()
        _error_line(f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        raise typer.Exit(EXIT_INTERNAL)


def _error_line(message: str) -> None:
    first = " ".join(str(message).split())
    sys.stderr.write(f"modscope: error: {first}\n")
    sys.stderr.flush()


def load_target(
    target: str,
    args: list[str] | None,
    args_json: str | None,
    trust: bool,
    device=None,
    *,
    weights: str | None = None,
    key: str | None = None,
):
    """The model TARGET names, with the checkpoint ``weights`` (``key`` inside it) loaded into it when given."""
    from modscope.load import load_model, parse_constructor_args

    kwargs = parse_constructor_args(args or (), args_json)
    model = load_model(target, kwargs=kwargs, trust=trust, device=device)
    if weights is not None:
        from modscope.checkpoint.weights import load_weights

        load_weights(model, weights, key=key, trust=trust)
    return model


def emit(report, *, as_json: bool, view=None) -> None:
    """Print ``report`` on stdout: JSON, or the rich renderable ``view`` (default: the report itself)."""
    if as_json:
        from modscope.render.json import dumps

        sys.stdout.write(dumps(report) + "\n")
        return
    from rich.console import Console

    Console(soft_wrap=False).print(view if view is not None else report)


__all__ = ["EXIT_USAGE", "EXIT_INTERNAL"]
