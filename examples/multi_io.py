"""Models with several inputs or several outputs (tuple and dict), on 1x3x32x32 images."""

import torch
from torch import nn


def _backbone(width: int = 16):
    """A tiny conv feature extractor: (N, 3, H, W) -> (N, width)."""
    return nn.Sequential(
        nn.Conv2d(3, width, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, width, kernel_size=3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class ImageWithMetadata(nn.Module):
    """Classify an image together with a side vector of metadata (two positional inputs)."""

    def __init__(self, meta_features: int = 8, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.image_encoder = _backbone(width)
        self.meta_encoder = nn.Sequential(nn.Linear(meta_features, width), nn.ReLU())
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, image, metadata):
        """Fuse image (N, 3, H, W) and metadata (N, meta_features) features by concatenation."""
        features = torch.cat([self.image_encoder(image), self.meta_encoder(metadata)], dim=1)
        return self.classifier(features)


class TwoHeads(nn.Module):
    """A shared backbone with a classification head and a bounding-box regression head."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.backbone = _backbone(width)
        self.cls_head = nn.Linear(width, num_classes)
        self.box_head = nn.Linear(width, 4)

    def forward(self, x):
        """Return a tuple (class logits (N, num_classes), box (N, 4) as sigmoid-scaled x1, y1, x2, y2)."""
        features = self.backbone(x)
        return self.cls_head(features), torch.sigmoid(self.box_head(features))


class DictOutput(nn.Module):
    """Return a dict with both the class logits and the embedding they were computed from."""

    def __init__(self, num_classes: int = 10, embedding_dim: int = 32):
        super().__init__()
        self.backbone = _backbone(16)
        self.embed = nn.Linear(16, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, x):
        """Return {"logits": (N, num_classes), "embedding": (N, embedding_dim)}."""
        embedding = self.embed(self.backbone(x))
        return {"logits": self.classifier(embedding), "embedding": embedding}
