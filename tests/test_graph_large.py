"""Large graphs: the layout for large graphs, the time limit on Graphviz's dot, and no dot outliving modscope."""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import modscope  # noqa: E402
from examples import catalog  # noqa: E402
from modscope.errors import RenderError, UsageError  # noqa: E402
from modscope.render import graph as render_graph  # noqa: E402
from modscope.render.graphviz import DEFAULT_TIMEOUT, TIMEOUT_ENV, dot_timeout  # noqa: E402
from tests.conftest import run_modscope  # noqa: E402
from tests.dense_models import DenseChain  # noqa: E402

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make dot)")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux")
# Slow for dot (>60 s of CPU with either layout), quick for modscope: 122 nodes, 1,891 edges.
# densenet121's whole `modscope graph ... -o x.svg`, CPU seconds of modscope and dot together (docs/graphs.md):
# measured 15 s with the layout for large graphs; dot alone ran past 95 s of CPU with the full layout.
DENSENET_CPU_BUDGET = 45
SLOW_FOR_DOT = ("tests/dense_models.py:DenseChain", "--arg", "layers=60", "--input", "1,2")


def test_small_graphs_keep_the_full_layout():
    g = modscope.graph(catalog.get("tiny_gpt").build(), torch.randint(0, 1000, (1, 16)), collapse=False)
    assert len(g.nodes) > 400 and render_graph.layout_cost(g) < render_graph.LARGE_LAYOUT_COST
    assert render_graph.layout_note(g) is None
    source = g.source
    assert "newrank=true" in source and "xlabel" not in source
    assert '"input:idx" -> "tok" [label=" 1x16 int64"]' in source


def test_layout_cost_counts_the_ranks_long_edges_skip():
    g = modscope.graph(DenseChain(layers=3), torch.randn(1, 2))
    # input, then cat/Linear three times, then output: ranks 0-7 in a chain. The input feeds the 2nd and 3rd
    # cat (skipping 2 and 4 ranks), layers.0 the 3rd cat (2): 8 nodes + 8 virtual ones.
    assert [n.kind.value for n in g.nodes].count("module") == 3 and len(g.nodes) == 8
    assert render_graph.layout_cost(g) == 16


def test_a_densely_connected_graph_gets_the_layout_for_large_graphs():
    g = modscope.graph(DenseChain(layers=30), torch.randn(1, 2))
    assert render_graph.layout_cost(g) > render_graph.LARGE_LAYOUT_COST
    source = g.source
    assert "newrank" not in source
    assert ' [xlabel=" 1x2"]' in source and '[label=" 1x' not in source, "shapes beside the edges, not on them"
    note = render_graph.layout_note(g)
    assert note.startswith("62 nodes and 496 edges") and "--depth N" in note
    assert "layout for large graphs" in source, "the note is recorded in the graph's title"


def test_the_time_limit_comes_from_the_argument_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dot_timeout() == DEFAULT_TIMEOUT
    assert dot_timeout(5) == 5.0 and dot_timeout(0) is None
    monkeypatch.setenv(TIMEOUT_ENV, "7.5")
    assert dot_timeout() == 7.5 and dot_timeout(3) == 3.0
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    assert dot_timeout() is None
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=TIMEOUT_ENV):
            dot_timeout()
    with pytest.raises(UsageError, match="--dot-timeout"):
        dot_timeout(-2)


@needs_dot
def test_the_library_stops_dot_at_the_limit(tmp_path):
    g = modscope.graph(DenseChain(layers=60), torch.randn(1, 2))
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"did not finish within 0.5 s and was stopped: draw less with --depth N"):
        render_graph.write(g, tmp_path / "dense.svg", timeout=0.5)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "dense.svg").exists()


@needs_dot
def test_the_cli_stops_dot_at_the_limit_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "dense.svg"
    done = run_modscope("graph", *SLOW_FOR_DOT, "-o", str(out), "--dot-timeout", "1")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("modscope: error: Graphviz's dot did not finish within 1 s and was stopped")
    assert "--dot-timeout SECONDS (MODSCOPE_DOT_TIMEOUT; 0 = no limit)" in lines[-1]
    assert lines[:-1] == [l for l in lines[:-1] if l.startswith("modscope: note: 122 nodes and 1,891 edges")]
    assert "Traceback" not in done.stderr and not out.exists()


def test_a_bad_time_limit_fails_before_the_model_is_loaded():
    done = run_modscope("graph", "examples/lenet.py:NoSuchModel", "-o", "x.svg", env={TIMEOUT_ENV: "soon"})
    assert done.returncode == 2 and done.stderr.startswith(f"modscope: error: {TIMEOUT_ENV}='soon'"), done.stderr


@needs_dot
@pytest.mark.slow
def test_densenet121_dataflow_renders_within_the_budget(tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "densenet121.svg"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = run_modscope("graph", "torchvision.models:densenet121", "--input", "1,3,224,224", "-o", str(out))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime  # dot is modscope's child: counted
    assert done.returncode == 0, done.stderr
    assert "modscope: note: 433 nodes and 967 edges with many long edges" in done.stderr
    assert out.read_bytes().lstrip().startswith(b"<?xml") and b"denseblock4" in out.read_bytes()
    assert cpu < DENSENET_CPU_BUDGET, f"{cpu:.1f} s of CPU, budget {DENSENET_CPU_BUDGET} s"


@needs_dot
@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_dot_ends_when_modscope_is_killed(tmp_path, signum):
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modscope", "graph", *SLOW_FOR_DOT, "-o", str(tmp_path / "d.svg"), "--dot-timeout", "0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    dot_pid = None
    try:
        dot_pid = _wait_for_child(proc, "dot", within=120)
        proc.send_signal(signum)
        proc.wait(timeout=30)
        assert _gone_within(dot_pid, 10), f"dot (pid {dot_pid}) still runs after modscope got {signum.name}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if dot_pid is not None and not _gone_within(dot_pid, 0):
            os.kill(dot_pid, signal.SIGKILL)


def _wait_for_child(proc: subprocess.Popen, name: str, within: float) -> int:
    """The pid of ``proc``'s child process called ``name``, once it runs."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"modscope ended (exit {proc.returncode}) before starting {name}"
        for entry in os.listdir("/proc"):
            stat = _stat(entry) if entry.isdigit() else None
            if stat and stat[0] == name and stat[2] == proc.pid:
                return int(entry)
        time.sleep(0.1)
    raise AssertionError(f"modscope started no {name} within {within} s")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        stat = _stat(str(pid))
        if stat is None or stat[1] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _stat(pid: str) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, from /proc/PID/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)
