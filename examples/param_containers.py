"""Dense layers whose weights live in nn.ParameterList / nn.ParameterDict (inputs of shape (1, 4))."""

import torch
from torch import nn


class ParamListDense(nn.Module):
    """A stack of matrix multiplications with one weight per layer held in an nn.ParameterList."""

    def __init__(self, features: int = 4, depth: int = 3, out_features: int = 1):
        super().__init__()
        self.params = nn.ParameterList(
            [nn.Parameter(torch.randn(features, features)) for _ in range(depth)]
        )
        self.params.append(nn.Parameter(torch.randn(features, out_features)))

    def forward(self, x):
        """Multiply x by each weight in turn: (N, features) -> (N, out_features)."""
        for weight in self.params:
            x = torch.mm(x, weight)
        return x


class ParamDictDense(nn.Module):
    """Three alternative weight matrices in an nn.ParameterDict; `choice` picks one at call time."""

    def __init__(self):
        super().__init__()
        self.params = nn.ParameterDict({
            "linear1": nn.Parameter(torch.randn(4, 4)),
            "linear2": nn.Parameter(torch.randn(4, 1)),
            "linear3": nn.Parameter(torch.randn(4, 2)),
        })

    def forward(self, x, choice: str = "linear1"):
        """Multiply x (N, 4) by the chosen weight; only that entry is used in this call."""
        return torch.mm(x, self.params[choice])
