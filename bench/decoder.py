"""A GPT-style decoder for the meta-device benchmark: 80 layers, d_model 8192, FFN 28672, about 59B parameters.

Build it on meta (``modscope summary bench/decoder.py:decoder_59b --device meta ...``); on a real device it
would need ~220 GiB for the float32 weights alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (proj(h).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Decoder(nn.Module):
    """Token embedding, ``n_layers`` blocks, final norm and an output head tied to the embedding."""

    def __init__(self, vocab: int = 32000, d_model: int = 8192, n_layers: int = 80, n_heads: int = 64, d_ff: int = 28672):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def decoder_59b() -> Decoder:
    """The benchmark's 59B configuration (80 x d_model 8192, FFN 28672, 64 heads, vocab 32000)."""
    return Decoder()


def decoder_tiny() -> Decoder:
    """Same architecture, small enough to run for real (tests compare it with the meta pass)."""
    return Decoder(vocab=100, d_model=32, n_layers=2, n_heads=4, d_ff=64)
