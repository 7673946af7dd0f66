"""Every torchvision classification model: modscope's totals equal PyTorch's and torchinfo's.

Models up to 100M parameters are built on CPU; the few larger ones are built on the meta device (same
structure, no memory), which also exercises meta handling.
"""
from __future__ import annotations

import pytest
import torch

import modscope

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

torchvision = pytest.importorskip("torchvision")
torchinfo = pytest.importorskip("torchinfo")

_LARGE = {"vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf",
          "efficientnet_v2_l", "convnext_large", "swin_v2_b", "swin_b", "maxvit_t", "vgg19_bn", "vgg19",
          "vgg16", "vgg16_bn", "vgg13", "vgg13_bn", "vgg11", "vgg11_bn", "regnet_x_32gf", "wide_resnet101_2",
          "efficientnet_b7", "efficientnet_b6", "convnext_base", "vit_b_16", "vit_b_32", "swin_v2_s", "swin_s"}

MODELS = sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_zoo_totals(name):
    device = "meta" if name in _LARGE else "cpu"
    try:
        with torch.device(device):
            model = torchvision.models.get_model(name, weights=None)
    except NotImplementedError:  # a few initialisers read values, which meta tensors do not have
        device = "cpu"
        model = torchvision.models.get_model(name, weights=None)
    report = modscope.summary(model)
    params = {id(p): p for p in model.parameters()}.values()
    buffers = {id(b): b for b in model.buffers()}.values()
    assert report.totals.params == sum(p.numel() for p in params)
    assert report.totals.buffers == sum(b.numel() for b in buffers)
    assert report.totals.modules == len(list(model.modules()))
    assert report.module("").params_total == report.totals.params
    if device == "meta":
        assert {w.code for w in report.warnings} == {"meta_tensor"}
    else:
        assert not report.warnings
        assert report.totals.params == torchinfo.summary(model, verbose=0).total_params
