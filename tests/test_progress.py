"""Progress on stderr: drawn when stderr is a terminal (the real CLI under a pseudo-terminal), nothing at all
when stderr is piped or with --json; stdout carries the same report either way."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest
import torch

from tests.checkpoint_files import write_safetensors, write_torch
from tests.conftest import REPO

LENET = ("examples/lenet.py:LeNet", "--input", "2,1,28,28")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_terminal(*args: str, cwd=REPO) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal and stdout piped: (exit code, stdout, stderr without escapes)."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="100")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "modscope", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                if not chunk:
                    break
                err += chunk
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode()
        proc.wait(timeout=120)
    finally:
        os.close(master)
        proc.stdout.close()
    return proc.returncode, out, _ESCAPE.sub("", err.decode(errors="replace"))


def run_piped(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modscope", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, TERM="xterm", COLUMNS="100"), timeout=120)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    here = tmp_path_factory.mktemp("progress")
    a = {f"layers.{i}.weight": torch.full((64, 64), float(i)) for i in range(4)}
    b = {k: v + (k == "layers.2.weight") for k, v in a.items()}
    write_torch(here / "a.pt", a)
    write_safetensors(here / "b.safetensors", b)
    return here


@pytest.mark.parametrize("args, stage", [
    (("time", *LENET, "--backward", "--repeat", "5"), "timing forward and backward (3 warm-up + 5 runs)"),
    (("grads", *LENET), "forward and backward pass"),
    (("nan", *LENET), "forward and backward pass, watching for NaN/Inf"),
    (("summary", *LENET), "counting parameters, then one forward pass and the memory estimate"),
])  # fmt: skip
def test_progress_on_a_terminal(args, stage):
    code, out, err = run_on_terminal(*args)
    assert code == 0, err
    assert stage in err, err[-500:]
    assert "LeNet" in out and stage not in out  # the report alone on stdout


def test_diff_progress_on_a_terminal(checkpoints):
    code, out, err = run_on_terminal("diff", "a.pt", "b.safetensors", cwd=checkpoints)
    assert code == 1 and "comparing values" in err
    assert "layers.2.weight" in out and "comparing" not in out


def test_nothing_on_stderr_when_piped():
    done = run_piped("time", *LENET, "--backward", "--repeat", "5")
    assert done.returncode == 0 and "fwd self" in done.stdout
    assert done.stderr == ""


def test_nothing_on_stderr_with_json_on_a_terminal():
    code, out, err = run_on_terminal("time", *LENET, "--repeat", "5", "--json")
    assert code == 0 and json.loads(out)["schema"] == "modscope.time/1"
    assert err == ""
