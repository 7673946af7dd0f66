"""Drawing graphs: DOT text, real SVG/PNG/PDF from Graphviz's dot, and the `modscope graph` command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import modscope  # noqa: E402
from examples import catalog  # noqa: E402
from modscope.errors import RenderError, UsageError  # noqa: E402
from modscope.render import graph as render_graph  # noqa: E402

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make dot)")
SVG = "{http://www.w3.org/2000/svg}"


def _svg_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def _gpt_graph(**options):
    model = catalog.get("tiny_gpt").build()
    return modscope.graph(model, torch.randint(0, 1000, (1, 16)), **options)


def test_dot_structure_of_a_collapsed_transformer():
    source = _gpt_graph().source
    assert source.startswith('digraph "TinyGPT" {')
    assert 'subgraph "cluster_blocks.0" {' in source
    assert 'subgraph "cluster_blocks.0.attn" {' in source
    assert "<b>blocks.0-31</b>" in source and "<b>x 32</b>" in source
    assert '"input:idx" -> "tok" [label=" 1x16 int64"]' in source
    assert '"blocks.0/add#2" -> "ln_f" [label=" 1x16x64"]' in source
    assert '"tok" -> "head" [dir=none style=dashed constraint=false' in source
    assert "Linear 64-&gt;192" in source, "labels are HTML-escaped"
    assert source.count("subgraph") == 3
    assert source.rstrip().endswith("}")


def test_dot_of_a_hierarchy_stacks_rows_invisibly():
    source = modscope.graph(catalog.get("lenet").build()).source
    assert "{rank=same;" in source and "style=invis" in source
    assert "module hierarchy" in source


def test_colour_by_parameters():
    plain = _gpt_graph().source
    colored = _gpt_graph(color="params").source
    assert "log scale" in colored and "log scale" not in plain
    assert render_graph._PALETTE[-1] in colored, "the largest module gets the darkest fill"


def test_frozen_modules_are_dashed():
    model = catalog.get("resnet18_finetune").build() if _has_torchvision() else None
    if model is None:
        pytest.skip("needs torchvision")
    g = modscope.graph(model, depth=1)
    assert g.node("conv1").frozen and not g.node("fc").frozen
    line = next(line for line in g.source.splitlines() if line.strip().startswith('"conv1" ['))
    assert "dashed" in line and "frozen" in line


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def test_format_resolution():
    assert render_graph.resolve_format(Path("net.SVG"), None) == "svg"
    assert render_graph.resolve_format(Path("net.gv"), None) == "dot"
    assert render_graph.resolve_format(Path("net"), None) == "dot"
    assert render_graph.resolve_format(Path("net.svg"), "png") == "png"
    with pytest.raises(UsageError, match="unknown graph format 'txt'"):
        render_graph.resolve_format(Path("net.txt"), None)


@needs_dot
def test_real_svg_with_expected_labels(tmp_path):
    path = _gpt_graph().render(tmp_path / "gpt.svg")
    texts = _svg_texts(path.read_bytes())
    for expected in ("TinyGPT", "blocks.0-31", "x 32", "qkv", "Linear 64->192", "scaled_dot_product_attention",
                     "1x16x1000", "tied"):
        assert any(expected in t for t in texts), expected


@needs_dot
def test_png_and_pdf_headers(tmp_path):
    g = modscope.graph(catalog.get("mlp").build(), torch.randn(2, 20))
    assert g.render(tmp_path / "mlp.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert g.render(tmp_path / "mlp.pdf").read_bytes().startswith(b"%PDF")
    assert g.render(tmp_path / "mlp.out", format="svg").read_bytes().lstrip().startswith(b"<?xml")
    assert (tmp_path / "mlp.dot").exists() is False
    assert g.render(tmp_path / "mlp.dot").read_text() == g.source


@needs_dot
def test_jupyter_display():
    svg = modscope.graph(catalog.get("mlp").build())._repr_svg_()
    assert "<svg" in svg and "hidden" in svg


@needs_dot
def test_awkward_names_are_quoted_and_escaped():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module('a"b<c>', nn.Linear(2, 2))

        def forward(self, x):
            return getattr(self, 'a"b<c>')(x) * 2

    g = modscope.graph(Odd(), torch.randn(1, 2))
    texts = _svg_texts(render_graph.render_bytes(g.source, "svg"))
    assert any('a"b<c>' in t for t in texts)


def test_missing_dot_gives_a_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(render_graph.shutil, "which", lambda name: None)
    g = modscope.graph(catalog.get("mlp").build())
    with pytest.raises(RenderError, match="Graphviz's `dot` program was not found.*--format dot"):
        g.render(tmp_path / "mlp.svg")
    assert g._repr_svg_() is None
    assert g.render(tmp_path / "mlp.dot").read_text().startswith("digraph")


# --- the command line -----------------------------------------------------------------------------------


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "modscope", *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
        timeout=300,
    )


@needs_dot
def test_cli_writes_svg(tmp_path):
    out = tmp_path / "net.svg"
    done = _run("graph", "examples/multi_io.py:ImageWithMetadata", "--input", "1,3,32,32", "--input", "1,8",
                "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and f"wrote {out} (svg" in done.stderr
    texts = _svg_texts(out.read_bytes())
    assert {"image", "metadata", "cat", "classifier"} <= {t.strip() for t in texts}


def test_cli_dot_on_stdout_and_depth():
    done = _run("graph", "examples/d2l_blocks.py:Chimera", "--input", "2,20", "--depth", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('digraph "Chimera"')
    assert '"0" -> "1"' in done.stdout and "cluster_" not in done.stdout


def test_cli_json():
    done = _run("graph", "examples/lenet.py:LeNet", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "modscope.graph/1" and doc["mode"] == "hierarchy"
    assert doc["nodes"][0]["detail"] == "1->6 k5 p2"


def test_cli_without_dot(tmp_path):
    """With no dot on PATH: --format dot still works, pictures fail with one line and exit 2."""
    env = {"PATH": str(tmp_path)}  # an empty directory: no dot anywhere
    out = tmp_path / "net.png"
    done = _run("graph", "examples/lenet.py:LeNet", "-o", str(out), env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Graphviz's `dot` program was not found" in done.stderr
    assert not out.exists()
    done = _run("graph", "examples/lenet.py:LeNet", "--format", "dot", "-o", str(tmp_path / "net.dot"), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "net.dot").read_text().startswith('digraph "LeNet"')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "net.txt"], "unknown graph format 'txt'"),
        (["--input", "1,2"], "forward pass raised RuntimeError"),
        (["--input", "1,x"], "input spec"),
        (["--depth", "-1"], "--depth"),
    ],
)
def test_cli_errors(args, message):
    done = _run("graph", "examples/lenet.py:LeNet", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_bad_target():
    done = _run("graph", "examples/lenet.py:NoSuchModel", "--format", "dot")
    assert done.returncode == 2 and "modscope: error:" in done.stderr
