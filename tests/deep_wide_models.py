"""A 2,000-deep chain and a 50,000-wide Sequential (also loaded by the CLI tests as file.py:Name targets)."""
from __future__ import annotations

import torch.nn as nn

DEPTH = 2_000
WIDTH = 50_000


class Level(nn.Module):
    """One level of the chain: a small Linear, then the next level (the innermost level has none)."""

    def __init__(self, child: "Level | None"):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.child = child

    def forward(self, x):
        x = self.linear(x)
        return x if self.child is None else self.child(x)


def deep(depth: int = DEPTH) -> nn.Module:
    """``depth`` nested Levels: module names ``child.child....linear``; the forward recurses ``depth`` deep."""
    model = None
    for _ in range(depth):
        model = Level(model)
    return model


def wide(width: int = WIDTH) -> nn.Module:
    """``nn.Sequential`` of ``width`` ``Linear(2, 2)``: a 50,000-long autograd chain."""
    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(width)])
