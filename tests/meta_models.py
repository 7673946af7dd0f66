"""Small real models for the meta-device tests: a tiny Llama (random init, no download), a tiny detector, and
modules whose forward reads values (a mask check, boolean indexing, numpy's global RNG)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def tiny_llama():
    """LlamaForCausalLM with tiny sizes and random weights (transformers, nothing downloaded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def llama_inputs() -> dict:
    """Token ids and an attention mask whose second row is left-padded."""
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def tiny_detector():
    """fasterrcnn_mobilenet_v3_large_fpn without weights, at 64-96 pixels and few proposals."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96,
        rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20, rpn_batch_size_per_image=32, box_batch_size_per_image=16,
        box_detections_per_img=10,
    )


def detector_inputs() -> tuple:
    """One image and its target (a valid box): what the model's own input validation accepts."""
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    return [image], [{"boxes": torch.tensor([[4.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]


class KeepPositive(nn.Module):
    """Boolean indexing (``nonzero`` underneath): the output's shape depends on the values."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        return y[y.sum(-1) > 0]


class CheckedBoxes(nn.Module):
    """Validates its boxes (as detection models do), then keeps the rows with a positive score."""

    def __init__(self):
        super().__init__()
        self.score = nn.Linear(4, 1)

    def forward(self, boxes):
        if not (boxes[:, 2:] > boxes[:, :2]).all():
            raise ValueError("boxes must have positive height and width")
        keep = self.score(boxes).squeeze(-1) > 0
        return boxes[keep]


def boxes() -> torch.Tensor:
    """Three valid boxes (x0, y0, x1, y1)."""
    return torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 4.0, 2.0], [0.0, 1.0, 5.0, 6.0]])


class NumpyNoise(nn.Module):
    """Draws from numpy's global RNG in its forward, like wav2vec2's SpecAugment."""

    def forward(self, x):
        return x * float(np.random.rand())


class SliceByLength(nn.Module):
    """Slices by a length given as a 0-d tensor (a tensor inside a slice: ``x[:, :n]``)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x, n):
        return self.lin(x[:, :n].transpose(0, 1))
