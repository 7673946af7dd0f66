"""Inputs for the torchvision detection models of the zoo, as a user gives them (``--inputs FILE:FUNCTION``):
images and, for the training-mode commands, their targets (boxes and labels; masks too for Mask R-CNN)."""
from __future__ import annotations

import torch


def _images_and_targets(masks: bool):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=generator)]
    target = {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    if masks:
        target["masks"] = torch.zeros(1, 64, 64, dtype=torch.uint8)
        target["masks"][0, 6:50, 4:40] = 1
    return images, [target]


def boxes():
    return _images_and_targets(masks=False)


def boxes_and_masks():
    return _images_and_targets(masks=True)
