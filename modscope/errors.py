"""User-facing errors: each carries one line of text and the exit code the CLI returns for it."""
from __future__ import annotations

#: Exit codes shared by every command (documented in docs/cli.md).
EXIT_OK = 0
EXIT_FINDINGS = 1  # a check ran and found problems (audit, check, diff "different", grads, nan)
EXIT_USAGE = 2  # bad input: usage, load or read errors


class ModscopeError(Exception):
    """An error whose message is meant for the user: what was wrong and what to do."""

    exit_code = EXIT_USAGE


class UsageError(ModscopeError):
    """The command line or API call itself is wrong (bad option value, malformed spec)."""


class LoadError(ModscopeError):
    """A TARGET could not be turned into an nn.Module."""


class CheckpointError(ModscopeError):
    """A checkpoint file or directory could not be read."""


class UnsafeLoadError(LoadError):
    """Loading would execute pickled code and the user did not pass --trust."""


class ForwardError(ModscopeError):
    """The model's forward pass raised; ``partial`` holds whatever was recorded before it did."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class RenderError(ModscopeError):
    """A graph could not be drawn: Graphviz's ``dot`` is missing or failed."""


class OutputError(ModscopeError):
    """A file the user asked for (graph -o, grads --plot) could not be written."""


# --- user code that ends the run (sys.exit(), other BaseExceptions) -------------------------------------

_RAISED_IN = "_modscope_raised_in"


def label_user_exit(exc: BaseException, where: str) -> None:
    """Note on ``exc`` which user code raised it ("the model's forward"), so the CLI can name it.

    Only for what ends a run without being an Exception (``sys.exit()``, ``GeneratorExit``, custom
    ``BaseException`` subclasses); KeyboardInterrupt stays an interrupt. ``exc`` itself keeps propagating, so
    library callers see the user's own exception.
    """
    if isinstance(exc, (Exception, KeyboardInterrupt)) or getattr(exc, _RAISED_IN, None):
        return
    try:
        setattr(exc, _RAISED_IN, where)
    except AttributeError:  # a BaseException subclass with __slots__: the traceback still names the place
        pass


def describe_user_exit(exc: BaseException) -> str:
    """One line for a SystemExit/BaseException from user code: "the model's forward called sys.exit(3)"."""
    where = getattr(exc, _RAISED_IN, None) or _innermost_frame(exc)
    return f"{where} {what_user_code_did(exc)}"


def what_user_code_did(exc: BaseException) -> str:
    """'called sys.exit(3)' for SystemExit, 'raised Name: message' for anything else."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({'' if exc.code is None else repr(exc.code)})"
    return f"raised {type(exc).__name__}: {exc}" if str(exc) else f"raised {type(exc).__name__}"


def _innermost_frame(exc: BaseException) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "user code"
    last = frames[-1]
    return f"user code ({last.filename} line {last.lineno}, in {last.name})"
