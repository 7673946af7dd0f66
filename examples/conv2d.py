"""A 2-D convolution written by hand (d2l "Convolutions for Images"); inputs are plain 2-D tensors."""

import torch
from torch import nn


def corr2d(X, K):
    """Compute the 2-D cross-correlation of matrix X with kernel K (no padding, stride 1)."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=X.dtype, device=X.device)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


class Conv2D(nn.Module):
    """A single-channel convolutional layer with a learnable kernel and scalar bias."""

    def __init__(self, kernel_size=(1, 2)):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        """Cross-correlate a 2-D tensor (H, W) with the kernel: -> (H - kh + 1, W - kw + 1)."""
        return corr2d(x, self.weight) + self.bias
