"""The blocks from d2l "Layers and Modules": custom, sequential, fixed-weight and nested modules.

All models here take inputs of shape (2, 20).
"""

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """One hidden layer of 256 units; the ReLU is applied functionally in forward."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, X):
        """Return (N, 10) outputs."""
        return self.out(F.relu(self.hidden(X)))


class MySequential(nn.Module):
    """A hand-rolled nn.Sequential: registers blocks in `_modules` and runs them in order."""

    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            # `_modules` is an OrderedDict, so insertion order is preserved and
            # the blocks are registered as submodules (parameters, .to(), ...).
            self._modules[str(idx)] = module

    def forward(self, X):
        """Feed X through every registered block in insertion order."""
        for block in self._modules.values():
            X = block(X)
        return X


def my_sequential():
    """Build MySequential(Linear(20, 256), ReLU(), Linear(256, 10))."""
    return MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))


class FixedHiddenMLP(nn.Module):
    """Uses a constant (non-trainable, unregistered) weight, reuses one Linear and has data-dependent control flow."""

    def __init__(self):
        super().__init__()
        # A plain tensor attribute: not a parameter, not a buffer, so it is
        # neither trained nor saved in state_dict (nor moved by .to()).
        self.rand_weight = torch.rand((20, 20))
        self.linear = nn.Linear(20, 20)

    def forward(self, X):
        """Return a scalar: the sum of the (repeatedly halved) activations."""
        X = self.linear(X)
        X = F.relu(X @ self.rand_weight + 1)
        # The same Linear is applied a second time (shared parameters).
        X = self.linear(X)
        # Python control flow that depends on the data.
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class NestMLP(nn.Module):
    """A module that nests an nn.Sequential inside it, followed by a Linear."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(20, 64), nn.ReLU(),
            nn.Linear(64, 32), nn.ReLU(),
        )
        self.linear = nn.Linear(32, 16)

    def forward(self, X):
        """Return (N, 16) outputs."""
        return self.linear(self.net(X))


def chimera():
    """Mix and match the blocks above inside a plain nn.Sequential (d2l's "chimera")."""
    return nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())


class Chimera(nn.Sequential):
    """The same chimera as `chimera()`, as a class: NestMLP -> Linear(16, 20) -> FixedHiddenMLP."""

    def __init__(self):
        super().__init__(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())
