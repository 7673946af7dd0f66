"""The MLP from the PyTorch "Build the Neural Network" tutorial (FashionMNIST, 1x28x28 inputs)."""

from torch import nn


class NeuralNetwork(nn.Module):
    """Flatten a 28x28 image and classify it with a 3-layer ReLU MLP."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        """Return class logits of shape (N, 10)."""
        x = self.flatten(x)
        return self.linear_relu_stack(x)
