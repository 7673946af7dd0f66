"""What every command shares: option types, model loading from options, error reporting, output."""
from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Annotated, Optional

import typer

from modscope.cli.completion import complete_path, complete_target
from modscope.errors import EXIT_USAGE, ModscopeError, describe_user_exit

EXIT_INTERNAL = 3

Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="file.py:Name, package.module:Name (class, factory or instance), a saved TorchScript/pickled model, "
        "a Hugging Face folder or config.json, hf:ORG/NAME[@REV] (local cache) or timm:NAME.",
        show_default=False,
        autocompletion=complete_target,
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
        help="Positional input SHAPE[:DTYPE], e.g. 1,3,224,224 or 1,128:int64[0,32000); repeatable. "
        "'auto': the input a Hugging Face/timm model's config describes.",
        show_default=False,
    ),
]
KwargOpt = Annotated[
    Optional[list[str]],
    typer.Option("--kwarg", help="Keyword input name=SHAPE[:DTYPE]; repeatable.", show_default=False),
]
InputsFnOpt = Annotated[
    Optional[str],
    typer.Option("--inputs", help="file.py:make_inputs returning a tensor, tuple or dict.", show_default=False,
                 autocompletion=complete_target),
]
BatchOpt = Annotated[
    Optional[int],
    typer.Option("--batch", min=1, help="Batch size of the derived input of a Hugging Face/timm model (default 1).",
                 show_default=False),
]
SeqLenOpt = Annotated[
    Optional[int],
    typer.Option("--seq-len", min=1, help="Sequence length of the derived input (default 128, at most the model's "
                 "positions; audio samples for raw-audio models).", show_default=False),
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        metavar="CKPT",
        help="Load this checkpoint into the model first (strict); any format modscope reads. A Hugging Face "
        "folder's own weights are the default where values are needed.",
        show_default=False,
        autocompletion=complete_path,
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
    bool,
    typer.Option(
        "--trust", help="Allow loading TorchScript archives and unpickling whole models (both run code from the file)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
WidthOpt = Annotated[
    Optional[int],
    typer.Option("--width", min=40, metavar="N", help="Draw the tables N columns wide (default: COLUMNS, else the "
                 "terminal's width, else 80 when piped); narrower tables leave out lower-value columns first.",
                 show_default=False),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


@contextlib.contextmanager
def reporting_errors(debug: bool, *, clean_stdout: bool = False):
    """Turn exceptions into one stderr line and an exit code (a traceback too with --debug).

    With ``clean_stdout`` (--json, DOT on stdout), what user code prints goes to stderr until the document is
    written (cli/stdout.py).
    """
    from modscope.cli.stdout import prints_to_stderr

    try:
        with prints_to_stderr(clean_stdout):
            yield
    except typer.Exit:
        raise
    except ModscopeError as exc:
        _fail(str(exc), exc.exit_code, debug)
    except KeyboardInterrupt:
        _error_line("interrupted")
        raise typer.Exit(130)
    except BrokenPipeError:  # stdout closed early (`| head`): Typer exits quietly
        raise
    except OSError as exc:  # a file that cannot be read or written: the environment's fault, not modscope's
        _fail(_os_error_text(exc), EXIT_USAGE, debug)
    except Exception as exc:  # a bug in modscope or an unexpected failure inside the user's model
        _fail(f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)", EXIT_INTERNAL, debug)
    except BaseException as exc:  # noqa: BLE001 - sys.exit() & co.: modscope raises none, so user code did
        _fail(describe_user_exit(exc), EXIT_USAGE, debug)


def exit_code_for(exc: BaseException) -> int:
    """The exit code ``reporting_errors`` gives ``exc`` (for callers that must agree on it, e.g. ranks)."""
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, ModscopeError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return EXIT_USAGE
    return EXIT_INTERNAL


def _fail(message: str, code: int, debug: bool):
    if debug:
        traceback.print_exc()
    _error_line(message)
    raise typer.Exit(code)


def _os_error_text(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot use {exc.filename}: {reason}" if exc.filename else reason


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
    values: bool = True,
):
    """The model TARGET names, with the checkpoint ``weights`` (``key`` inside it) loaded into it when given.

    Hugging Face and timm targets are built on meta when the command needs no values (``values=False``) and
    no weights are given; when it does, a Hugging Face folder's own weights are loaded unless ``weights`` is given.
    """
    from modscope.load.hub import hub_kind
    from modscope.load.target import load_model, parse_constructor_args

    kwargs = parse_constructor_args(args or (), args_json)
    kind = hub_kind(target)
    if builds_on_meta(target, device, values=values, weights=weights):
        device = "meta"
    elif kind is not None and str(device) != "meta":
        from modscope.load.memory_guard import refuse_if_it_cannot_fit

        refuse_if_it_cannot_fit(target, load_model(target, kwargs=kwargs, trust=trust, device="meta"), device)
    model = load_model(target, kwargs=kwargs, trust=trust, device=device)
    if kind == "hf" and weights is None and values:
        weights = default_weights(target)
    if weights is not None:
        from modscope.load.hub_keys import is_transformers_model, load_hub_weights

        if is_transformers_model(model):
            load_hub_weights(model, weights, key=key, trust=trust, target=target)
        else:
            from modscope.checkpoint.weights import load_weights

            load_weights(model, weights, key=key, trust=trust, target=target)
    return model


def builds_on_meta(target: str, device=None, *, values: bool, weights: str | None) -> bool:
    """Whether ``load_target`` builds this Hugging Face/timm target on meta by its own choice (no values needed)."""
    from modscope.load.hub import hub_kind

    return hub_kind(target) is not None and device is None and not values and weights is None


def as_chosen_meta(report):
    """``report`` with its meta-tensor warning turned into an info: modscope built the model on meta itself."""
    from dataclasses import replace

    from modscope.reports import Severity

    warnings = tuple(
        replace(w, severity=Severity.INFO, message="built on meta from the config by modscope (no weights read): "
                "counts, shapes and the tree only; give --input for a forward pass or --weights for values")
        if w.code == "meta_tensor" else w
        for w in report.warnings
    )
    return replace(report, warnings=warnings)


def default_weights(target: str) -> str | None:
    """The weights file a Hugging Face folder (or ``hf:`` snapshot) holds; None for any other TARGET."""
    from modscope.load.hub import hub_kind, source

    return source(target).weights() if hub_kind(target) == "hf" else None


AUTO_INPUT = "auto"


def given_inputs(input, kwarg, inputs_fn, *, batch=None, seq_len=None, device="cpu"):
    """(ModelInputs from --input/--kwarg/--inputs or None, whether the derived input is asked for).

    ``--input auto``, ``--batch`` or ``--seq-len`` ask for the input the model's config describes.
    """
    from modscope.errors import UsageError
    from modscope.load.inputs import build_inputs

    specs = list(input or ())
    sized = batch is not None or seq_len is not None
    if AUTO_INPUT in specs:
        if len(specs) > 1 or kwarg or inputs_fn:
            raise UsageError("--input auto stands alone: it replaces every --input, --kwarg and --inputs")
        return None, True
    given = build_inputs(specs, kwarg or (), inputs_fn, device=device)
    if given is not None and sized:
        raise UsageError("--batch/--seq-len size the derived input (--input auto); drop them or the explicit inputs")
    return given, sized


def derived_inputs(model, *, batch=None, seq_len=None, device="cpu", needed_by: str | None = None):
    """The input ``model``'s config describes (Hugging Face, timm), or a one-line error saying what to give."""
    from modscope.errors import UsageError
    from modscope.load.hub_inputs import default_inputs

    derived = default_inputs(model, batch=batch, seq_len=seq_len, device=device)
    if derived is not None:
        return derived
    if needed_by:
        raise UsageError(
            f"{needed_by} runs the model: give its input with --input SHAPE[:DTYPE] (e.g. --input 1,3,224,224), "
            "--kwarg name=SHAPE or --inputs file.py:make_inputs"
        )
    raise UsageError(
        f"--input auto needs a model whose config says what it eats (Hugging Face or timm); {type(model).__name__} "
        "does not: give --input SHAPE[:DTYPE], --kwarg or --inputs"
    )


def emit(report, *, as_json: bool, view=None, width: int | None = None) -> None:
    """Print ``report`` on stdout: JSON, or the rich renderable ``view`` (default: the report itself) drawn
    ``width`` columns wide (None: rich's choice, COLUMNS, else the terminal's width, else 80)."""
    from modscope.cli.stdout import real_stdout

    out = real_stdout()  # user code's prints went to stderr until now
    if as_json:
        from modscope.render.json import dumps

        out.write(dumps(report) + "\n")
        return
    from rich.console import Console

    from modscope.render import views  # noqa: F401  (the report's own view: report/presented.py)

    Console(soft_wrap=False, width=width).print(view if view is not None else report)


__all__ = ["EXIT_USAGE", "EXIT_INTERNAL"]
