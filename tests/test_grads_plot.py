"""The gradient-flow picture: real PNG/SVG files, matplotlib's global state untouched, a hint without it."""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import modscope
from modscope.errors import UsageError
from tests import training_models as tm

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report():
    return modscope.grads(tm.UnusedBranch(), torch.randn(4, 8))


def test_png(report, tmp_path):
    path = modscope.save_grad_plot(report, tmp_path / "grads.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000


def test_svg_marks_layers_without_gradient(report, tmp_path):
    path = modscope.save_grad_plot(report, tmp_path / "grads.svg")
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    text = path.read_text()
    for label in ("used", "unused", "head", "no gradient / zero / non-finite", "mean |grad|", "max |grad|"):
        assert label in text


def test_matplotlib_state_untouched(report, tmp_path):
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    rc = dict(matplotlib.rcParams)
    figures = plt.get_fignums()
    modscope.save_grad_plot(report, tmp_path / "g.png")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc
    assert plt.get_fignums() == figures


def test_frozen_model_and_bad_suffix(tmp_path):
    pytest.importorskip("torchvision")
    from examples.resnet_finetune import resnet18_finetune

    report = modscope.grads(resnet18_finetune(), torch.randn(1, 3, 224, 224))
    trainable = modscope.save_grad_plot(report, tmp_path / "ft.svg").read_text()
    everything = modscope.save_grad_plot(report, tmp_path / "ft_all.svg", include_frozen=True).read_text()
    assert "<!-- layer4.0.conv1 -->" in trainable and "<!-- layer1.0.conv1 -->" not in trainable
    assert "<!-- layer1.0.conv1 -->" in everything
    with pytest.raises(UsageError, match=".png"):
        modscope.save_grad_plot(report, tmp_path / "g.jpg")


def test_missing_matplotlib_hint(report, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"pip install 'modscope\[plot\]'"):
        modscope.save_grad_plot(report, tmp_path / "g.png")
