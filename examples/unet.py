"""A small U-Net for image segmentation (input 1x1x64x64, output has the same spatial size)."""

import torch
from torch import nn


class DoubleConv(nn.Module):
    """Two (3x3 conv -> BatchNorm -> ReLU) layers that keep the spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        """Apply both conv layers."""
        return self.block(x)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; H and W must be divisible by 2**depth."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base: int = 8, depth: int = 3):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]  # e.g. [8, 16, 32, 64]
        self.pool = nn.MaxPool2d(kernel_size=2)

        # Down path: one DoubleConv per level, each followed by 2x2 max-pooling.
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down.append(DoubleConv(channels, width))
            channels = width
        self.bottleneck = DoubleConv(widths[-2], widths[-1])

        # Up path: transposed conv doubles H and W, then fuse with the skip connection.
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up.append(DoubleConv(width * 2, width))

        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x):
        """Return per-pixel logits of shape (N, out_channels, H, W)."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips)):
            x = upsample(x)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
