"""``modscope schema [NAME]``: print the JSON Schema of a command's ``--json`` document (modscope/schemas/)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from modscope.cli.app import app
from modscope.cli.common import DebugOpt, reporting_errors
from modscope.errors import UsageError


@app.command()
def schema(
    name: Annotated[
        Optional[str],
        typer.Argument(metavar="[NAME]", help="summary, tree, audit, checkpoint, diff, graph, grads, time, ...", show_default=False),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Print the JSON Schema of a command's --json document; without NAME, list the schemas."""
    from modscope import schemas

    with reporting_errors(debug):
        if name is None:
            width = max(map(len, schemas.names()))
            for known, command in schemas.COMMANDS.items():
                typer.echo(f"{known:<{width}}  {command}")
            return
        found = schemas.name_of(name)
        if found is None:
            raise UsageError(f"no schema named {name!r}: choose one of {', '.join(schemas.names())} (modscope schema lists them)")
        typer.echo(schemas.text(found), nl=False)
