"""Models whose dataflow graphs are slow for Graphviz's dot but quick for modscope (tests/test_graph_large.py)."""
from __future__ import annotations

import torch
from torch import nn


class DenseChain(nn.Module):
    """``layers`` tiny Linear layers, each fed the concatenation of the input and every earlier output
    (densenet's pattern): O(layers**2) edges, most of them spanning many ranks."""

    def __init__(self, layers: int = 40, width: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width * (i + 1), width) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(torch.cat(outputs, dim=1)))
        return outputs[-1]
