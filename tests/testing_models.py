"""Variants of the bundled examples that the modscope.testing tests need."""
from __future__ import annotations

import torch.nn as nn

from examples.transformer import TinyGPT


def tiny_gpt(tie: bool = True) -> TinyGPT:
    """The bundled GPT (output head tied to the token embedding), two blocks deep; ``tie=False`` gives the
    head its own copy of the matrix."""
    model = TinyGPT(layers=2)
    if not tie:
        model.head.weight = nn.Parameter(model.tok.weight.detach().clone())
    return model
