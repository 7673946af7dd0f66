"""LeNet-5 as in d2l (sigmoid activations, average pooling, 1x28x28 inputs)."""

from torch import nn


class LeNet(nn.Module):
    """Classic LeNet-5: two conv/pool stages followed by three fully connected layers."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, num_classes),
        )

    def forward(self, X):
        """Return class logits for a batch of 1x28x28 images."""
        return self.net(X)
