"""Small awkward models for the forward-pass tests (also loaded by the CLI tests as file.py:Name targets)."""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

Pair = namedtuple("Pair", ["left", "right"])


@dataclass
class Output:
    logits: torch.Tensor
    features: dict
    note: str = "ok"


class Broken(nn.Module):
    """The second layer expects 30 features but gets 20: forward fails in module "1"."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(10, 20)
        self.second = nn.Linear(30, 5)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


class Nested(nn.Module):
    """Keyword and non-tensor inputs; a dataclass output holding a dict, a namedtuple and a string."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)
        self.pair = PairSplit()

    def forward(self, x, mask=None, scale: float = 1.0, mode: str = "train"):
        h = self.encoder(x) * scale
        if mask is not None:
            h = h * mask
        pair = self.pair(h)
        return Output(self.head(pair.left + pair.right), {"pair": pair, "hidden": h, "mode": mode, "n": 3})


class PairSplit(nn.Module):
    def forward(self, h):
        return Pair(h, h.flip(-1))


class Reused(nn.Module):
    """One Linear applied three times, twice with a different batch size."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)

    def forward(self, x):
        y = self.shared(x)
        y = self.shared(y)
        return self.shared(torch.cat([y, y]))


class WithUnused(nn.Module):
    """An auxiliary head that forward never calls, a ModuleList (no forward of its own) and a frozen layer."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.aux = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.frozen(x)


class Catches(nn.Module):
    """A child raises and forward recovers; later the root raises its own, different error."""

    def __init__(self, fail: bool = True):
        super().__init__()
        self.risky = Broken()
        self.fail = fail

    def forward(self, x):
        try:
            self.risky(x)
        except RuntimeError:
            pass
        if self.fail:
            raise ValueError("root gave up")
        return x


class GradProbe(nn.Module):
    """Records whether autograd and training mode were on during forward (for the no_grad default)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.is_grad_enabled(), self.training))
        return self.linear(x)


class BatchNormNet(nn.Module):
    """BatchNorm running statistics change in a training-mode forward; dropout draws random numbers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(F.relu(self.bn(self.conv(x))))


class DataDependentBig(nn.Module):
    """Data-dependent control flow inside a module whose weights are 'too big' to run for real."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 64)

    def forward(self, x):
        x = self.body(x)
        if x.sum() > 0:
            return x * 2
        return x


def make_nested_inputs():
    """For ``--inputs``: keyword tensors and a plain float."""
    return {"x": torch.randn(2, 8), "mask": torch.ones(2, 16), "scale": 0.5}
