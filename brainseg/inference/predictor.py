"""Predictor: shipped weights -> engine -> preprocess -> probabilities -> masks.

OpenVINO on a CPU, torch on a GPU, eager fp32 as the reference (``precision="fp32"``); the torch modules load only
when needed (LayerCAM). The segmenter is one ResUNet or an ensemble, whose members' spread is the prediction's
``spread``. Every slice also gets the input check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import softmax
from skimage.morphology import remove_small_objects

from brainseg.check.assess import InputCheck, PixelMeasures, judge_many, load_calibration, measure_pixels
from brainseg.inference.engine import Engine, OpenVinoEngine, choose, cpu_has_bf16, cpu_threads
from brainseg.inference.postprocess import largest_component_3d
from brainseg.models.weights import combined_digest, load_model, segmenter_files, verify
from brainseg.paths import WEIGHTS_DIR
from brainseg.preprocess import preprocess, restore_size

if TYPE_CHECKING:
    import torch
    from torch import nn

BATCH_SIZE = 16
# a background batch also waits this long after a foreground call or a page run's start and end: the page still
# draws (a first view went on drawing in headless Chromium 1.5 s after its run ended, on the server's 2-core machine)
BACKGROUND_GRACE_S = 2.5


@dataclass(frozen=True)
class Prediction:
    """What the models say about one slice, at the slice's own size."""

    probability: np.ndarray  # HxW float32: segmenter's tumour probability per pixel
    tumour_probability: float  # classifier's probability that the slice shows tumour
    check: InputCheck | None = None  # is the slice like the training data? None without a shipped calibration
    spread: np.ndarray | None = None  # HxW float32: the ensemble members' standard deviation; None for one model

    def mask(self, threshold: float, gate: float, min_area: int = 0) -> np.ndarray:
        """The pipeline's mask: pixels at or above ``threshold``, without connected regions (8-connected) of fewer
        than ``min_area`` pixels; empty when the classifier gate says no tumour or when no region is left.

        Args:
            threshold: segmenter probability at or above which a pixel is tumour.
            gate: classifier tumour probability below which the mask is left empty.
            min_area: connected regions of fewer pixels than this are removed (0 or 1: none).

        Returns:
            ``HxW bool`` mask.
        """
        mask = self.probability >= threshold
        if min_area > 1:
            mask = remove_small_objects(mask, max_size=min_area - 1, connectivity=2)
        if self.tumour_probability < gate or not mask.any():
            return np.zeros(self.probability.shape, bool)
        return mask


def volume_masks(
    predictions: Sequence[Prediction], threshold: float, gate: float, min_area: int = 0, largest_3d: bool = False
) -> list[np.ndarray]:
    """The pipeline's masks of a volume's slices (in order): each slice's :meth:`Prediction.mask`, then, with
    ``largest_3d`` and slices of one size, only the largest 3D connected tumour of the stack.

    Args:
        predictions: the slices' predictions, in slice order.
        threshold: segmenter probability at or above which a pixel is tumour.
        gate: classifier tumour probability below which a slice's mask is left empty.
        min_area: connected regions (8-connected) of fewer pixels than this are removed.
        largest_3d: keep only the largest 3D connected tumour (slices of one size only).

    Returns:
        One ``HxW bool`` mask per slice.
    """
    masks = [p.mask(threshold, gate, min_area) for p in predictions]
    if not largest_3d or len({m.shape for m in masks}) != 1:
        return masks
    return list(largest_component_3d(masks))


def batch_sizes(count: int, batch_size: int = BATCH_SIZE) -> list[int]:
    """How :meth:`Predictor.predict_many` splits ``count`` slices: full batches, then the rest as powers of two
    (largest first), so that the engines only ever see a few batch shapes (16, 8, 4, 2, 1 by default)."""
    full, rest = divmod(count, batch_size)
    return [batch_size] * full + [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]


def default_device() -> str:
    """``"cuda"`` where torch sees a GPU, else ``"cpu"``; torch is imported only where an NVIDIA driver is."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Predictor:
    """Both models, loaded once, on one device, run by one engine; thread-safe for inference.

    The torch modules (:meth:`module`) load on first use: the torch engine needs them at once, the OpenVINO
    engine only to convert a model that is not in its cache yet, LayerCAM and flip TTA when asked for."""

    def __init__(
        self,
        weights_dir: str | Path = WEIGHTS_DIR,
        device: str | None = None,
        precision: str = "auto",
        check: bool = True,
        engine: str = "auto",
        cache_dir: Path | None = None,
        segmenters: Sequence[str | Path] | None = None,
    ) -> None:
        """``engine``/``precision``: see :func:`brainseg.inference.engine.choose`; ``cache_dir``: where OpenVINO keeps
        converted models (default :func:`brainseg.inference.engine.cache_root`); ``segmenters``: the segmenter's weights
        files (several: their ensemble), by default :func:`~brainseg.models.weights.segmenter_files` of
        ``weights_dir``."""
        self.weights_dir = Path(weights_dir)
        self.segmenter_files = [Path(f) for f in segmenters] if segmenters else segmenter_files(self.weights_dir)
        self.device = str(device) if device else default_device()  # "cpu", "cuda", "cuda:1", ...
        self.device_type = self.device.split(":")[0]
        self.choice = choose(self.device_type, engine, precision, cpu_has_bf16())
        self._modules: dict[str, nn.Module] = {}
        self._loading = threading.Lock()
        self._foreground = threading.Condition()  # guards the count of foreground predict_many calls running
        self._foreground_calls = 0
        self._foreground_ended = 0.0  # time.monotonic() when the last foreground call ended
        digests = {
            "segmenter": combined_digest([verify(f) for f in self.segmenter_files]),
            "classifier": verify(self.weights_dir / "classifier.safetensors"),
        }
        self.input_check = load_calibration(self.weights_dir) if check else None
        self.engine: Engine
        if self.choice.engine == "openvino":
            self.engine = OpenVinoEngine(self._converters(), digests, self.choice.precision, cpu_threads(), cache_dir)
        else:
            from brainseg.inference.torch_engine import TorchEngine

            self.engine = TorchEngine(self.segmenter, self.classifier, self.device, self.choice.precision)
        self.precision = self.engine.choice.precision

    def module(self, kind: str) -> nn.Module:
        """The torch ``"segmenter"`` (a ResUNet, or the :class:`Ensemble` of several) or ``"classifier"`` in eval
        mode, loaded (and its files checked) on first use."""
        with self._loading:
            if kind not in self._modules:
                import torch

                from brainseg.models.networks import Ensemble

                if kind == "classifier":
                    model, _ = load_model(self.weights_dir / "classifier.safetensors", self.device)
                elif len(self.segmenter_files) == 1:
                    model, _ = load_model(self.segmenter_files[0], self.device)
                else:
                    model = Ensemble([load_model(f, self.device)[0] for f in self.segmenter_files]).eval()
                self._modules[kind] = (
                    model.to(memory_format=torch.channels_last) if self.choice.precision == "bf16" else model
                )
            return self._modules[kind]

    def _converters(self) -> dict[str, Callable[[], object]]:
        """Each kind's OpenVINO model, converted from the torch module when the cache does not hold it (the only
        time the OpenVINO engine imports torch)."""

        def convert(kind: str) -> object:
            from brainseg.inference.torch_engine import converters

            return converters(self.module)[kind]()

        return {kind: (lambda kind=kind: convert(kind)) for kind in ("segmenter", "classifier")}

    @property
    def segmenter(self) -> nn.Module:
        return self.module("segmenter")

    @property
    def classifier(self) -> nn.Module:
        return self.module("classifier")

    def autocast(self) -> torch.autocast:
        """bf16 autocast for the torch modules in bf16, a no-op in fp32."""
        import torch

        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @staticmethod
    def batch(images_u8: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed ``Bx3x256x256`` float32 batch, what the engines take."""
        return np.stack([preprocess(image) for image in images_u8])

    def tensors(self, images_u8: Sequence[np.ndarray]) -> torch.Tensor:
        """The preprocessed batch as a torch tensor on the device, for the torch modules (LayerCAM)."""
        from brainseg.inference.torch_engine import as_tensor

        return as_tensor(self.batch(images_u8), self.device, channels_last=self.precision == "bf16")

    def classifier_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classifier pooled features ``BxD`` and logits ``Bx2`` of a batch, from one call of the engine."""
        return self.engine.classify(batch)

    @property
    def members(self) -> int:
        """How many segmenters are averaged (1: a single model)."""
        return len(self.segmenter_files)

    def predict_many(
        self, images_u8: Sequence[np.ndarray], batch_size: int = BATCH_SIZE, background: bool = False,
        scan: bool = False,
    ) -> list[Prediction]:
        """Predictions for many slices, in batches of :func:`batch_sizes`; each mapped back to its slice's size.

        Args:
            images_u8: ``HxWx3 uint8`` slices, of any size.
            batch_size: the largest batch (see :func:`batch_sizes`).
            background: yield to the others: each batch waits until no foreground call is running and the last
                one ended ``BACKGROUND_GRACE_S`` ago (the gallery's prefetch, so that what a user asked for, and
                the page drawing it, get the CPU's cores to themselves).
            scan: the slices are one uploaded volume's: the input check takes their size as the scanner's matrix
                (:func:`brainseg.check.assess.judge_size`).

        Returns:
            One prediction per slice, in order.
        """
        if background:
            return self._predict_batches(images_u8, batch_size, self._after_foreground, scan)
        with self._foreground:
            self._foreground_calls += 1
        try:
            return self._predict_batches(images_u8, batch_size, lambda: None, scan)
        finally:
            with self._foreground:
                self._foreground_calls -= 1
            self.defer_background()

    def defer_background(self) -> None:
        """Background batches start no sooner than ``BACKGROUND_GRACE_S`` from now (the app calls it as a page run
        starts and as it ends: the page is being drawn). It never blocks: a page run may itself wait for a patient
        that the background is predicting."""
        with self._foreground:
            self._foreground_ended = time.monotonic()
            self._foreground.notify_all()

    def _after_foreground(self) -> None:
        """Wait until no foreground call runs and the last one ended, or :meth:`defer_background` was called,
        ``BACKGROUND_GRACE_S`` ago."""
        with self._foreground:
            while True:
                self._foreground.wait_for(lambda: self._foreground_calls == 0)
                rest = self._foreground_ended + BACKGROUND_GRACE_S - time.monotonic()
                if rest <= 0:
                    return
                self._foreground.wait(rest)

    def _predict_batches(
        self, images_u8: Sequence[np.ndarray], batch_size: int, before_batch: Callable[[], None], scan: bool
    ) -> list[Prediction]:
        predictions, start = [], 0
        for size in batch_sizes(len(images_u8), batch_size):
            before_batch()
            chunk, start = images_u8[start : start + size], start + size
            seg, _, logits, checks = self.engine.both(
                self.batch(chunk), lambda chunk=chunk: self._measure(chunk),
                lambda features, measures: self._judge(features, measures, scan),
            )
            for image, members, tumour, check in zip(chunk, seg, softmax(logits, axis=1)[:, 1], checks):
                spread = restore_size(members.std(axis=0), image.shape[:2]) if len(members) > 1 else None
                predictions.append(
                    Prediction(restore_size(members.mean(axis=0), image.shape[:2]), float(tumour), check, spread)
                )
        return predictions

    def _measure(self, images_u8: Sequence[np.ndarray]) -> list[PixelMeasures]:
        """The input check's pixel layers of each slice (none without a shipped calibration)."""
        return [measure_pixels(image, self.input_check) for image in images_u8] if self.input_check else []

    def _judge(self, features: np.ndarray, measures: list[PixelMeasures], scan: bool) -> list[InputCheck | None]:
        """Each slice's input check from its pixel measures and classifier features (None without calibration)."""
        if not self.input_check:
            return [None] * len(features)
        return judge_many(measures, features, self.input_check, scan)

    def predict(self, image_u8: np.ndarray) -> Prediction:
        return self.predict_many([image_u8])[0]
