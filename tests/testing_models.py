"""Small models with one property the modscope.testing tests need (examples/ and torchvision cover the rest)."""
from __future__ import annotations

import torch.nn as nn


class TinyLM(nn.Module):
    """A token model whose output head shares the embedding matrix (GPT-2 style weight tying)."""

    def __init__(self, vocab: int = 100, dim: int = 16, tie: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.block = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.block(self.embed(ids)))
