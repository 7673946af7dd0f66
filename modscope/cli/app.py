"""The Typer application object, the global ``--version`` option and Typer's shell completion options
(``--install-completion``, ``--show-completion``; candidates come from cli/completion.py)."""
from __future__ import annotations

import typer

from modscope.cli.usage import OneLineUsageGroup

app = typer.Typer(
    name="modscope",
    cls=OneLineUsageGroup,
    help="Look inside any PyTorch nn.Module: what is there, and what happens when it runs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"modscope {version('modscope')}")
        except PackageNotFoundError:
            from modscope import __version__

            typer.echo(f"modscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Exit codes: 0 fine, 1 a check found problems, 2 usage/load/read error, 3 internal error."""
