"""The torch side of the engines: :class:`TorchEngine` (bf16 autocast or eager fp32) and the conversion of the
torch modules into OpenVINO models (:func:`converters`). Imported only where torch runs: on a GPU, for the fp32
reference, and to convert a model the OpenVINO cache does not hold yet.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainseg.inference.engine import Choice, T, U
from brainseg.models.networks import Classifier, Ensemble, ResBlock, ResUNet
from brainseg.preprocess import MODEL_SIZE


def as_tensor(batch: np.ndarray, device: str | torch.device, channels_last: bool) -> torch.Tensor:
    """A preprocessed array as a float32 tensor on ``device`` (channels_last for bf16 kernels).

    Args:
        batch: ``Bx3x256x256`` preprocessed batch.
        device: where the tensor goes, e.g. ``"cpu"`` or ``"cuda"``.
        channels_last: lay the tensor out channels_last.

    Returns:
        ``Bx3x256x256`` float32 tensor.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor


class TorchEngine:
    """The PyTorch modules, under bf16 autocast (channels_last) or in eager fp32."""

    def __init__(self, segmenter: nn.Module, classifier: Classifier, device: str, precision: str) -> None:
        self.segmenter, self.classifier, self.device = segmenter, classifier, torch.device(device)
        self.choice = Choice("torch", precision)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.choice.precision == "bf16")

    def tensor(self, batch: np.ndarray) -> torch.Tensor:
        return as_tensor(batch, self.device, channels_last=self.choice.precision == "bf16")

    @torch.inference_mode()
    def segment(self, batch: np.ndarray) -> np.ndarray:
        with self.autocast():
            logits = self.segmenter(self.tensor(batch))
        return torch.sigmoid(logits.float()).cpu().numpy()

    @torch.inference_mode()
    def classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.autocast():
            features = self.classifier.features(self.tensor(batch)).float()
        logits = self.classifier.logits(features)  # fp32: bf16 logits near 4 round in steps of 0.016
        return features.cpu().numpy(), logits.cpu().numpy()

    def both(self, batch: np.ndarray, measure: Callable[[], U], judge: Callable[[np.ndarray, U], T]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, T]:
        """One network after the other (on a GPU they queue on one stream anyway).

        Args:
            batch: ``Bx3x256x256`` float32 preprocessed batch.
            measure: the network-free measures of the batch's slices.
            judge: turns the classifier's ``BxD`` features and those measures into the input checks.

        Returns:
            Probabilities ``BxMx256x256``, features ``BxD``, logits ``Bx2`` and what ``judge`` returned.
        """
        features, logits = self.classify(batch)
        return self.segment(batch), features, logits, judge(features, measure())


def resize_matrix(size: int, source: int = MODEL_SIZE) -> torch.Tensor:
    """``size x source``: the classifier's antialiased bilinear resize along one axis as a matrix (the resize is
    separable, so ``R @ X @ R.T`` resizes a ``source x source`` channel ``X``), read off torch's own resize."""
    basis = torch.eye(source)[:, None, None, :]     # one row signal per source pixel (a 1-pixel-wide column does
    rows = F.interpolate(basis, size=(1, size), mode="bilinear", align_corners=False, antialias=True)  # not match)
    return rows[:, 0, 0, :].T.contiguous()


class FeaturesAndLogits(nn.Module):
    """The classifier with both outputs, for conversion: pooled features ``BxD`` and logits ``Bx2`` of
    ``Bx3x256x256`` inputs. The antialiased resize to the backbone's ``input_size`` runs as two matrix products
    (OpenVINO's own antialiased resize cost 0.4 s on each new batch shape and 2x at batch 8)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("resize", resize_matrix(classifier.input_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # R @ X @ R.T with both products on the right: OpenVINO ran the left product R @ X as an f32 batched
        # matmul (0.49 ms a slice on one core), a right product by a constant as a bf16 FullyConnected (0.07 ms)
        columns = (x @ self.resize.T).transpose(-1, -2)          # (X R.T).T = R X.T
        resized = (columns @ self.resize.T).transpose(-1, -2)    # (R X.T R.T).T = R X R.T
        features = self.classifier.features(resized)
        return features, self.classifier.logits(features)


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one convolution that computes ``norm(conv(x))`` with the norm in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return conv.weight * scale[:, None, None, None], (conv.bias - norm.running_mean) * scale + norm.bias


def pointwise(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A 1x1 convolution with these ``out x in x 1 x 1`` weights (and bias)."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=bias is not None)
    conv.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().clone())
    return conv


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class DecoderWithoutConcat(nn.Module):
    """A decoder :class:`~brainseg.models.networks.ResBlock` of ``cat([upsample(x), skip])``, without the concat:
    each of its two 1x1 convs (BatchNorm folded in) is split into the part that reads the upsampled half, run on
    ``x`` before upsampling (a 1x1 conv commutes with nearest upsampling: a quarter of the pixels), plus the part
    that reads ``skip``. The same function (fp32 within 2e-5 of the ResUNet); in OpenVINO bf16 it took the
    segmenter from 15.0 to 10.4 ms per 2 slices on one core (its concats ran on reference kernels)."""

    def __init__(self, block: ResBlock) -> None:
        super().__init__()
        first, first_bias = fold_batch_norm(*block.main[0][:2])
        shortcut, shortcut_bias = fold_batch_norm(*block.shortcut[:2])
        upsampled = first.shape[1] - first.shape[0]  # ResUNet: cat of upsampled (in - out) and skip (out)
        self.first_low, self.first_skip = pointwise(first[:, :upsampled]), pointwise(first[:, upsampled:], first_bias)
        self.shortcut_low = pointwise(shortcut[:, :upsampled])
        self.shortcut_skip = pointwise(shortcut[:, upsampled:], shortcut_bias)
        self.second = block.main[1]

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        main = F.relu(upsample(self.first_low(x)) + self.first_skip(skip))
        return F.relu(self.second(main) + upsample(self.shortcut_low(x)) + self.shortcut_skip(skip))


class SegmenterForConversion(nn.Module):
    """A :class:`brainseg.models.networks.ResUNet` (eval mode) with :class:`DecoderWithoutConcat` decoders: what is
    converted for OpenVINO."""

    def __init__(self, net: ResUNet) -> None:
        super().__init__()
        self.stem, self.encoders, self.head = net.stem, net.encoders, net.head
        self.decoders = nn.ModuleList(DecoderWithoutConcat(block) for block in net.decoders)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return self.head(x)


def for_conversion(segmenter: ResUNet | Ensemble) -> nn.Module:
    """The segmenter (or each member of an ensemble) as :class:`SegmenterForConversion`."""
    if isinstance(segmenter, Ensemble):
        return Ensemble([SegmenterForConversion(member.eval()) for member in segmenter.members]).eval()
    return SegmenterForConversion(segmenter.eval()).eval()


def convert(module: nn.Module) -> Any:
    """``openvino.Model`` of ``module`` for any batch of ``3 x 256 x 256`` inputs."""
    import openvino as ov

    example = torch.zeros(1, 3, MODEL_SIZE, MODEL_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the classifier's resize branch, which this size skips
        return ov.convert_model(module.eval(), example_input=example, input=[-1, 3, MODEL_SIZE, MODEL_SIZE])


def converters(modules: Callable[[str], nn.Module]) -> dict[str, Callable[[], Any]]:
    """For :class:`~brainseg.inference.engine.OpenVinoEngine`: each kind's OpenVINO model from ``modules(kind)``."""
    return {
        "segmenter": lambda: convert(for_conversion(modules("segmenter"))),
        "classifier": lambda: convert(FeaturesAndLogits(modules("classifier"))),
    }
