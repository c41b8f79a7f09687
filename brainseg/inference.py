"""Predictor: shipped weights -> device -> preprocess -> probabilities -> masks.

The fast path (channels_last, inference mode, batching, bf16 autocast where the CPU has native bf16 or on
a GPU) is the default; ``precision="fp32"`` gives the plain eager reference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from skimage.morphology import remove_small_objects

from brainseg.checks import InputCheck, assess, load_calibration
from brainseg.errors import BrainsegError
from brainseg.preprocess import preprocess, restore_size
from brainseg.weights import WEIGHTS_DIR, load_model

DEFAULT_SEG_THRESHOLD = 0.5
DEFAULT_GATE = 0.5
DEFAULT_MIN_AREA = 0


@dataclass(frozen=True)
class Prediction:
    """What the models say about one slice, at the slice's own size."""

    probability: np.ndarray      # HxW float32: segmenter's tumour probability per pixel
    tumour_probability: float    # classifier's probability that the slice shows tumour
    check: InputCheck | None = None  # is the slice like the training data? None without a shipped calibration

    def mask(self, threshold: float = DEFAULT_SEG_THRESHOLD, gate: float = DEFAULT_GATE,
             min_area: int = DEFAULT_MIN_AREA) -> np.ndarray:
        """``HxW bool``: the pipeline's mask: pixels at or above ``threshold``, without connected regions
        (8-connected) of fewer than ``min_area`` pixels; empty when the classifier gate says no tumour or when
        no region is left."""
        mask = self.probability >= threshold
        if min_area > 1:
            mask = remove_small_objects(mask, max_size=min_area - 1, connectivity=2)
        if self.tumour_probability < gate or not mask.any():
            return np.zeros(self.probability.shape, bool)
        return mask


def pipeline_settings(weights_dir: Path = WEIGHTS_DIR) -> dict[str, float]:
    """Thresholds chosen on the validation patients and shipped beside the weights (defaults otherwise)."""
    path = Path(weights_dir) / "pipeline.json"
    settings = {"seg_threshold": DEFAULT_SEG_THRESHOLD, "gate": DEFAULT_GATE, "min_area": DEFAULT_MIN_AREA}
    if path.exists():
        settings.update(json.loads(path.read_text()))
    return settings


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class Predictor:
    """Both models, loaded once, on one device; thread-safe for inference."""

    def __init__(self, weights_dir: str | Path = WEIGHTS_DIR, device: str | torch.device | None = None,
                 precision: str = "auto", check: bool = True) -> None:
        weights_dir = Path(weights_dir)
        self.device = torch.device(device) if device else default_device()
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" or cpu_has_bf16() else "fp32"
        if precision not in ("fp32", "bf16"):
            raise BrainsegError(f"precision {precision!r}: expected 'fp32', 'bf16' or 'auto'")
        self.precision = precision
        self.segmenter, _ = load_model(weights_dir / "segmenter.safetensors", self.device)
        self.classifier, self.classifier_settings = load_model(weights_dir / "classifier.safetensors", self.device)
        self.input_check = load_calibration(weights_dir) if check else None
        if precision == "bf16":
            self.segmenter.to(memory_format=torch.channels_last)
            self.classifier.to(memory_format=torch.channels_last)

    def autocast(self):
        """bf16 autocast on the fast path, a no-op in fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def tensors(self, images_u8: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocessed ``Bx3x256x256`` batch on the device."""
        batch = torch.from_numpy(np.stack([preprocess(image) for image in images_u8])).to(self.device)
        return batch.contiguous(memory_format=torch.channels_last) if self.precision == "bf16" else batch

    @torch.inference_mode()
    def classifier_outputs(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Classifier pooled features ``BxD`` and logits ``Bx2`` of a batch, from one forward pass."""
        with self.autocast():
            features = self.classifier.features(batch).float()
        logits = self.classifier.logits(features)  # fp32: bf16 logits near 4 round in steps of 0.016
        return features.cpu().numpy(), logits.cpu().numpy()

    @torch.inference_mode()
    def outputs(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segmenter probabilities ``Bx256x256``, tumour probabilities ``B`` and classifier features ``BxD``."""
        with self.autocast():
            seg_logits = self.segmenter(batch)
        features, cls_logits = self.classifier_outputs(batch)
        seg = torch.sigmoid(seg_logits.float())[:, 0].cpu().numpy()
        cls = torch.softmax(torch.from_numpy(cls_logits), dim=1)[:, 1].numpy()
        return seg, cls, features

    def probabilities(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Segmenter probabilities ``Bx256x256`` and classifier tumour probabilities ``B`` of a batch."""
        return self.outputs(batch)[:2]

    def predict_many(self, images_u8: Sequence[np.ndarray], batch_size: int = 16) -> list[Prediction]:
        """Predictions for many slices, in batches; each mapped back to its slice's size."""
        predictions = []
        for start in range(0, len(images_u8), batch_size):
            chunk = images_u8[start:start + batch_size]
            seg, cls, features = self.outputs(self.tensors(chunk))
            for image, probability, tumour, row in zip(chunk, seg, cls, features):
                check = assess(image, row, self.input_check) if self.input_check else None
                predictions.append(Prediction(restore_size(probability, image.shape[:2]), float(tumour), check))
        return predictions

    def predict(self, image_u8: np.ndarray) -> Prediction:
        return self.predict_many([image_u8])[0]
