"""The pytest plugin (``pytest11`` entry point): the ``modscope_snapshot`` fixture and its options.

Hooks and fixtures only; the work is in ``modscope.snapshot``. Nothing here imports torch, so the plugin
costs nothing in test runs that do not use it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modscope.snapshot import SnapshotFixture, SnapshotSession, snapshot_directory, snapshot_name

session_key = pytest.StashKey[SnapshotSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modscope", "modscope architecture snapshots")
    group.addoption(
        "--modscope-update",
        action="store_true",
        default=False,
        help="rewrite modscope architecture snapshots instead of comparing against them",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[session_key] = SnapshotSession(update=config.getoption("modscope_update"))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None:
        for line in session.summary_lines(Path(config.rootpath)):
            terminalreporter.write_line(line)


@pytest.fixture
def modscope_snapshot(request: pytest.FixtureRequest) -> SnapshotFixture:
    """Golden architecture snapshots: ``modscope_snapshot.assert_match(model, inputs=None, name=None)``."""
    return SnapshotFixture(
        snapshot_directory(Path(request.node.path)),
        snapshot_name(request.node.nodeid),
        request.config.stash[session_key],
        Path(request.config.rootpath),
    )
