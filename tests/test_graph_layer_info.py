"""layer_info.describe: a layer's key hyper-parameters in a few characters."""
from __future__ import annotations

import pytest
from torch import nn

from modscope.collect.graphs.layer_info import describe, hyperparams


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), "Conv2d 3->64 k7 s2 p3"),
        (nn.Conv2d(32, 32, 3, padding=1, groups=32), "Conv2d 32->32 k3 p1 dw"),
        (nn.Conv2d(64, 128, (1, 3), groups=4, dilation=2), "Conv2d 64->128 k1x3 d2 g4"),
        (nn.Conv1d(4, 8, 3, padding="same"), "Conv1d 4->8 k3 p=same"),
        (nn.ConvTranspose2d(16, 8, 2, stride=2), "ConvTranspose2d 16->8 k2 s2"),
        (nn.Linear(512, 10), "Linear 512->10"),
        (nn.LazyLinear(5), "LazyLinear ?->5"),
        (nn.Bilinear(3, 4, 5), "Bilinear 3,4->5"),
        (nn.BatchNorm2d(64), "BatchNorm2d 64"),
        (nn.LayerNorm(768), "LayerNorm 768"),
        (nn.GroupNorm(32, 256), "GroupNorm 256 g32"),
        (nn.Embedding(32000, 768), "Embedding 32000x768"),
        (nn.MultiheadAttention(768, 12), "MultiheadAttention d768 h12"),
        (nn.LSTM(10, 20, 2, bidirectional=True), "LSTM 10->20 x2 bi"),
        (nn.GRU(8, 16), "GRU 8->16"),
        (nn.Dropout(0.1), "Dropout p0.1"),
        (nn.MaxPool2d(3, 2, 1), "MaxPool2d k3 s2"),
        (nn.MaxPool2d(2), "MaxPool2d k2"),
        (nn.AdaptiveAvgPool2d((1, 1)), "AdaptiveAvgPool2d ->1x1"),
        (nn.TransformerEncoderLayer(512, 8), "TransformerEncoderLayer d512 h8 ff2048"),
        (nn.Upsample(scale_factor=2.0), "Upsample x2.0 nearest"),
        (nn.Flatten(), "Flatten"),
        (nn.Flatten(0, 2), "Flatten 0..2"),
        (nn.ReLU(), "ReLU"),
        (nn.Sequential(), "Sequential"),
    ],
)
def test_describe(module, expected):
    assert describe(module) == expected


def test_a_broken_module_is_just_its_type():
    conv = nn.Conv2d(1, 1, 1)
    del conv.kernel_size
    assert hyperparams(conv) == "" and describe(conv) == "Conv2d"
