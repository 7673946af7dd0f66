"""Models for the HTML report's tests: a network whose names are hostile markup, and a cheap 50,000-module one."""
from __future__ import annotations

import torch
from torch import nn

HOSTILE = "</script><script>alert(1)</script>"
HOSTILE_PARAM = "<img src=x onerror=alert(2)>&amp;\"'"


class Hostile(nn.Module):
    """A child module and a parameter whose names try to break out of every place a page shows a name."""

    def __init__(self):
        super().__init__()
        self.add_module(HOSTILE, nn.Linear(4, 3))
        self.register_parameter(HOSTILE_PARAM, nn.Parameter(torch.ones(3)))
        self.unused = nn.Linear(3, 3)  # never called: a finding linked to its module

    def forward(self, x):
        return getattr(self, HOSTILE)(x) * self._parameters[HOSTILE_PARAM]


class Wide(nn.Module):
    """``blocks`` blocks of ``width`` parameter-free modules (50,000 modules in all by default).

    Neighbouring blocks differ (their activations rotate), so no run of repeats collapses them into one row.
    """

    KINDS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU)

    def __init__(self, blocks: int = 250, width: int = 199):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(*(self.KINDS[(b + j) % len(self.KINDS)]() for j in range(width))) for b in range(blocks)
        )

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
