"""Shared test fixtures: the repository root on sys.path and a runner for the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run_modscope(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 300):
    """Run ``python -m modscope ARGS`` in a subprocess, as a user would; returns CompletedProcess (text)."""
    full_env = dict(os.environ, COLUMNS="120", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "modscope", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_modscope
