"""The torch side of the engines: :class:`TorchEngine` (bf16 autocast or eager fp32) and the conversion of the
torch modules into OpenVINO models (:func:`converters`). Imported only where torch runs: on a GPU, for the fp32
reference, and to convert a model the OpenVINO cache does not hold yet.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainseg.engine import Choice, T
from brainseg.models import Classifier
from brainseg.preprocess import MODEL_SIZE


def as_tensor(batch: np.ndarray, device: str | torch.device, channels_last: bool) -> torch.Tensor:
    """A preprocessed ``Bx3x256x256`` array as a float32 tensor on ``device`` (channels_last for bf16 kernels)."""
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

    def both(self, batch: np.ndarray, then: Callable[[np.ndarray], T]) -> tuple[np.ndarray, np.ndarray, np.ndarray, T]:
        """One network after the other (on a GPU they queue on one stream anyway)."""
        features, logits = self.classify(batch)
        return self.segment(batch), features, logits, then(features)


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
        resized = self.resize @ x @ self.resize.T
        features = self.classifier.features(resized)
        return features, self.classifier.logits(features)


def convert(module: nn.Module) -> Any:
    """``openvino.Model`` of ``module`` for any batch of ``3 x 256 x 256`` inputs."""
    import openvino as ov
    example = torch.zeros(1, 3, MODEL_SIZE, MODEL_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the classifier's resize branch, which this size skips
        return ov.convert_model(module.eval(), example_input=example, input=[-1, 3, MODEL_SIZE, MODEL_SIZE])


def converters(modules: Callable[[str], nn.Module]) -> dict[str, Callable[[], Any]]:
    """For :class:`brainseg.engine.OpenVinoEngine`: build each kind's OpenVINO model from ``modules(kind)``."""
    return {"segmenter": lambda: convert(modules("segmenter")),
            "classifier": lambda: convert(FeaturesAndLogits(modules("classifier")))}
