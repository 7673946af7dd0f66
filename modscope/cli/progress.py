"""Progress on stderr while a command works: a spinner naming the stage, a bar for counted work.

Drawn only when stderr is a terminal and the command prints tables: with ``--json``, or with stderr piped
or redirected (CI logs, ``2>file``), nothing at all is written, so documents and logs stay as they are. The
display is transient (erased when the work is done) and is closed before the report is printed on stdout.
User code's prints are not redirected: stdout stays the model's and the report's.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


class Quiet:
    """What a command talks to when no progress is shown: every call does nothing."""

    def stage(self, text: str) -> None:
        pass

    def counter(self, text: str) -> Callable[[int, int], None] | None:
        return None


class Shown(Quiet):
    """One rich.progress task whose description is the current stage."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.task = bar.add_task("starting", total=None)

    def stage(self, text: str) -> None:
        self.bar.update(self.task, description=text, total=None, completed=0)

    def counter(self, text: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for the collectors, drawn as a bar under ``text``."""
        self.stage(text)

        def update(done: int, total: int) -> None:
            self.bar.update(self.task, completed=done, total=total)

        return update


def shows_progress(as_json: bool) -> bool:
    """Whether progress is drawn: stderr is a terminal and the command prints tables, not JSON."""
    try:
        return not as_json and sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr closed or replaced by something without isatty
        return False


@contextlib.contextmanager
def progress(as_json: bool, *, unit: str = "steps") -> Iterator[Quiet]:
    """A ``Shown`` display on stderr while the block runs (``unit="bytes"``: sizes and speed), else ``Quiet``."""
    if not shows_progress(as_json):
        yield Quiet()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counted = (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()) if unit == "bytes" else (
        MofNCompleteColumn(), TimeElapsedColumn())
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), *counted)
    with Progress(*columns, console=Console(stderr=True), transient=True, redirect_stdout=False,
                  refresh_per_second=4) as bar:  # a light load on the CPU while `time` measures
        yield Shown(bar)
