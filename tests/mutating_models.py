"""Models whose forward changes their own state: parameters in place, tensor attributes, caches."""
from __future__ import annotations

import torch
import torch.nn as nn


class ScalesThroughData(nn.Module):
    """Doubles its weight through ``.data`` on every call: invisible to autograd and to the version counter."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        self.w.data.mul_(2)
        return x @ self.w


class AddsUnderNoGrad(nn.Module):
    """Adds one to its weight under no_grad, as a hand-written update step would."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        with torch.no_grad():
            self.lin.weight.add_(1)
        return self.lin(x)


class Renormalised(nn.Module):
    """nn.Embedding with max_norm renormalises the rows it looks up, in place, in its weight."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4, max_norm=0.5)
        with torch.no_grad():
            self.embed.weight.mul_(10)  # every row is longer than max_norm
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.embed((x.abs() * 3).long() % 10).mean(1))


class Caches(nn.Module):
    """Keeps the last input, a call count, a history list and a running tensor attribute it updates in place."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.calls = 0
        self.history: list = []
        self.total = torch.zeros(4)

    def forward(self, x):
        self.last = x
        self.calls += 1
        self.history.append(x.detach())
        self.total.add_(x.detach().sum(0))
        return self.lin(x)


class SpectralNormed(nn.Module):
    """spectral_norm's pre-hook sets a derived ``weight`` attribute and steps its power iteration."""

    def __init__(self):
        super().__init__()
        self.lin = nn.utils.spectral_norm(nn.Linear(4, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.lin(x)))


class MutatesThenRaises(nn.Module):
    """Changes a parameter, a buffer and an attribute, then raises."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x):
        self.lin.weight.data.fill_(7.0)
        self.seen.add_(1)
        self.cached = self.lin(x)
        raise RuntimeError("boom after mutating")


MUTATING = [ScalesThroughData, AddsUnderNoGrad, Renormalised, Caches, SpectralNormed]
