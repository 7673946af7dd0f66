"""AlexNet as in d2l (single-channel 224x224 inputs, e.g. upscaled FashionMNIST)."""

from torch import nn


class AlexNet(nn.Module):
    """Five conv layers with ReLU/max-pooling, then two dropout-regularised 4096-wide FC layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(256 * 5 * 5, 4096), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, X):
        """Return class logits for a batch of in_channels x 224 x 224 images."""
        return self.classifier(self.features(X))
