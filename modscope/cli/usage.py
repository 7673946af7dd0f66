"""Usage errors (unknown option or command, missing argument, bad value) as one line on stderr, exit 2.

Typer/click would print a usage line, a hint and a boxed panel; modscope says what was wrong and where
to look, in the same ``modscope: error: ...`` form as every other error.
"""
from __future__ import annotations

import difflib
import sys

from typer import Abort
from typer.core import TyperGroup

try:  # Typer >= 0.26 vendors click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older Typer on top of click
    from click.exceptions import NoSuchOption, UsageError

from modscope.errors import EXIT_USAGE


class OneLineUsageGroup(TyperGroup):
    """The modscope command group: usage errors become one line; everything else is Typer's."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from modscope.cli.completion import enable

        enable()  # after Typer registered its shells: bash gets the colon-aware completer
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name or "modscope", complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # a bare `modscope`: the help was printed
                from modscope.cli.common import _error_line

                _error_line(usage_line(exc, self._command_named(args)))
            sys.exit(EXIT_USAGE)
        except Abort:
            sys.stderr.write("modscope: aborted\n")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def _command_named(self, args) -> str:
        """'modscope summary' when the command line names a known command (click does not always say)."""
        names = set(self.commands)
        first = next((a for a in (sys.argv[1:] if args is None else args) if not a.startswith("-")), None)
        return f"modscope {first}" if first in names else "modscope"


def usage_line(exc: UsageError, command: str = "modscope") -> str:
    """'no such option --jsn (did you mean --json?); see modscope summary --help'.

    ``command`` names the command for the hint when the error carries no context of its own.
    """
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, NoSuchOption):
        text = f"no such option {exc.option_name}{_did_you_mean(exc.option_name, exc.possibilities or ())}"
    else:
        text = " ".join(exc.format_message().split()).rstrip(".")
        text = text[:1].lower() + text[1:]
        if ctx is not None and text.startswith("no such command") and isinstance(ctx.command, TyperGroup):
            text = text.split(". Did you mean")[0]  # Typer's own suggestion, said again below in our words
            wrong = text.split("'")[1] if text.count("'") >= 2 else ""
            text += _did_you_mean(wrong, ctx.command.list_commands(ctx))
    where = ctx.command_path if ctx is not None else command
    return f"{text}; see {where} --help"


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
