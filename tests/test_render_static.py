"""Rendered text of the static views at a fixed width, compared with golden files.

Regenerate after an intended change with: MODSCOPE_UPDATE_GOLDEN=1 pytest tests/test_render_static.py
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch.nn as nn
from rich.console import Console

import modscope
from examples.catalog import EXAMPLES
from modscope.render.console import audit_view, summary_view, tree_view

GOLDEN = Path(__file__).parent / "golden"


def render(renderable) -> str:
    console = Console(width=100, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MODSCOPE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with MODSCOPE_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def _example(name):
    return next(e for e in EXAMPLES if e.name == name).build()


def test_lenet_summary_golden():
    check_golden("lenet_summary.txt", render(summary_view(modscope.summary(_example("lenet")))))


def test_chimera_tree_golden():
    check_golden("chimera_tree.txt", render(tree_view(modscope.summary(_example("chimera")))))


def test_collapsed_transformer_stack_golden():
    block = lambda: nn.TransformerEncoderLayer(64, 4, 128)  # noqa: E731
    model = nn.Sequential(nn.Embedding(100, 64), *[block() for _ in range(32)], nn.Linear(64, 100))
    text = render(tree_view(modscope.summary(model), depth=1))
    assert "1-32  TransformerEncoderLayer x32  (33.5K each)" in text
    check_golden("transformer_tree.txt", text)


def test_report_is_rich_renderable_and_audit_view():
    report = modscope.summary(nn.Linear(2, 2))
    assert "parameters" in render(report)
    text = render(audit_view(modscope.audit(nn.Linear(2, 2), expect_dtype="float16")))
    assert "dtype_mismatch" in text and "FAILED" in text


@pytest.mark.parametrize("depth", [0, 1])
def test_summary_depth_limits_rows(depth):
    text = render(summary_view(modscope.summary(_example("chimera")), depth=depth))
    assert ("0.net" in text) is False
    assert ("NestMLP" in text) is (depth >= 1)
