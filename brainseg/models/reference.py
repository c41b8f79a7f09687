"""The dataset author's 2D U-Net (Buda et al. 2019, ``mateuszbuda/brain-segmentation-pytorch``), for comparison.

Four levels of two conv3x3-BN-ReLU layers (no conv bias), 2x2 max pooling, 2x2 transposed-convolution
upsampling and concatenated skips; 32 initial features give 7,763,041 parameters. Used by the benchmark
as the reference architecture (untrained weights: timing and FLOPs only). Returns logits ``Bx1xHxW``.
"""
from __future__ import annotations

import torch
from torch import nn


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv3x3 (no bias) + BatchNorm + ReLU layers."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ReferenceUNet(nn.Module):
    """2D U-Net with ``features`` channels at full resolution, doubling at each of four poolings."""

    def __init__(self, in_channels: int = 3, classes: int = 1, features: int = 32) -> None:
        super().__init__()
        widths = [features * 2 ** level for level in range(5)]  # 32, 64, 128, 256, 512
        self.encoders = nn.ModuleList(
            double_conv(in_channels if level == 0 else widths[level - 1], widths[level]) for level in range(4))
        self.bottleneck = double_conv(widths[3], widths[4])
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in reversed(range(4)))
        self.decoders = nn.ModuleList(double_conv(2 * widths[level], widths[level]) for level in reversed(range(4)))
        self.head = nn.Conv2d(widths[0], classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)
