"""The two networks: ``ResUNet`` (segmenter, the paper's Table 2) and ``Classifier`` (timm ResNet50 + head).

Plain ``nn.Module``s built by factories; no I/O here (weights are loaded in ``brainseg.models.weights``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> nn.Sequential:
    """Conv (with bias, as in the Keras original) + BatchNorm (+ ReLU).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel side (odd), padded to keep the spatial size.
        relu: end with a ReLU.

    Returns:
        The layers as one module.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Main path conv1x1-BN-ReLU-conv3x3-BN, shortcut conv1x1-BN, add, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv_bn(in_channels, out_channels, 1), conv_bn(out_channels, out_channels, 3, relu=False)
        )
        self.shortcut = conv_bn(in_channels, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


class ResUNet(nn.Module):
    """U-Net with residual blocks (Deng et al. 2024, Table 2); returns logits ``Bx1xHxW``.

    Fully convolutional: any input whose sides are multiples of 16 works (trained on crops, run on 256x256).
    """

    def __init__(self, in_channels: int = 3, classes: int = 1, base: int = 16) -> None:
        super().__init__()
        widths = [base, base * 2, base * 4, base * 8, base * 16]  # 16, 32, 64, 128, 256
        self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 3), conv_bn(widths[0], widths[0], 3))
        self.encoders = nn.ModuleList(ResBlock(widths[i], widths[i + 1]) for i in range(4))
        self.decoders = nn.ModuleList(ResBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
        return self.head(x)


class Ensemble(nn.Module):
    """Several segmenters run side by side: logits ``BxMxHxW``, one channel per member (``M`` members), so that an
    engine converts and runs them as one graph and a single ``ResUNet`` (``Bx1xHxW``) is the case ``M = 1``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x) for member in self.members], dim=1)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` (``BxCxHxW``) resized to ``size x size`` the way the classifier's backbone was trained (bilinear,
    antialiased); unchanged when it is that size already."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Classifier(nn.Module):
    """timm ResNet50 backbone + head (pool, flatten, dense, dropout, dense); returns 2-way logits.

    ``input_size`` is the side the backbone sees: 256x256 inputs are resized to it inside ``forward``,
    so the same preprocessing feeds both models.
    """

    def __init__(self, input_size: int = 256, hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.input_size = input_size
        import timm  # here, not at the top: timm pulls in torchvision and torch._dynamo (~2 s), and the app's

        # OpenVINO path builds no torch classifier until LayerCAM asks for one
        self.backbone = timm.create_model("resnet50", pretrained=False, num_classes=0, global_pool="")
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(self.backbone.num_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 2),
        )

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        return resize_square(x, self.input_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``Bx2048`` (for the input check's feature-space distance)."""
        return self.head[1](self.head[0](self.backbone(self.resize(x))))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``Bx2`` from pooled features ``Bx2048`` (the dense part of the head)."""
        return self.head[2:](features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.resize(x)))


def build_model(kind: str, **kwargs) -> nn.Module:
    """Factory: ``"segmenter"`` -> ResUNet, ``"classifier"`` -> Classifier."""
    if kind == "segmenter":
        return ResUNet(**kwargs)
    if kind == "classifier":
        return Classifier(**kwargs)
    raise ValueError(f"unknown model kind {kind!r}; expected 'segmenter' or 'classifier'")


def keras_parameter_count(model: nn.Module) -> int:
    """Parameters plus BatchNorm running mean/var: the count Keras reports for the same network."""
    parameters = sum(p.numel() for p in model.parameters())
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return parameters + running
