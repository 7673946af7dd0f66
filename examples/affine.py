"""A hand-made affine layer built from raw nn.Parameters (d2l "Custom Layers")."""

import torch
from torch import nn
from torch.nn import functional as F


class MyLinear(nn.Module):
    """Fully connected layer with ReLU: relu(X @ W + b), parameters created by hand."""

    def __init__(self, in_units: int = 5, units: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units))

    def forward(self, X):
        """Apply the affine map followed by ReLU."""
        linear = torch.matmul(X, self.weight) + self.bias
        return F.relu(linear)


class AffineNet(nn.Module):
    """Two stacked MyLinear layers: in_units -> hidden -> units."""

    def __init__(self, in_units: int = 5, hidden: int = 8, units: int = 3):
        super().__init__()
        self.layer1 = MyLinear(in_units, hidden)
        self.layer2 = MyLinear(hidden, units)

    def forward(self, X):
        """Run both layers in order."""
        return self.layer2(self.layer1(X))
