"""The one preprocessing step shared by training, evaluation and inference.

``preprocess(image_u8: HxWx3) -> float32 3x256x256``: resize to the model's 256x256 and z-score each
channel over the brain (pixels brighter than the background), so that scanners and sequences with
different intensity scales look alike to the models.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

MODEL_SIZE = 256
CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")   # what the models take, in order
BACKGROUND_LEVEL = 10   # uint8 mean over channels at or below this counts as background
MIN_STD = 8.0           # uint8 units: keeps near-empty end-of-volume slices from blowing up noise


def resize_image(image_u8: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Resize ``HxWx3 uint8`` to ``size x size`` (bilinear); a no-op at the model size."""
    if image_u8.shape[:2] == (size, size):
        return image_u8
    return np.asarray(Image.fromarray(image_u8).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Resize ``HxW bool`` to ``size x size`` (nearest)."""
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0


def brain_pixels(image_u8: np.ndarray) -> np.ndarray:
    """``HxW bool``: pixels above the background level."""
    total = image_u8[..., 0].astype(np.uint16) + image_u8[..., 1] + image_u8[..., 2]
    return total > 3 * BACKGROUND_LEVEL   # the channels' mean above the level, in integers


def histogram_moments(histograms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (``3`` float32 each) of the values counted in ``3x256`` histograms, from the
    exact integer sums (float64: closer to the true figures than numpy's float32 ``std`` along an axis)."""
    values = np.arange(256, dtype=np.float64)
    count = histograms.sum(axis=1)
    mean = histograms @ values / count
    variance = np.maximum(histograms @ values ** 2 / count - mean ** 2, 0.0)
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


_CHANNEL_OFFSETS = np.arange(3, dtype=np.uint16)[:, None, None] * 512
_LEVELS = np.arange(256, dtype=np.float32)


def preprocess(image_u8: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` -> ``3x256x256 float32``, each channel z-scored over brain pixels (every pixel when the
    brain has fewer than 64); the background keeps one constant value per channel.

    Each pixel's code (value, inside the brain or not, channel) counts it in one histogram call and looks up its
    normalised value in one table: 3x faster than float arithmetic on the image."""
    resized_u8 = resize_image(image_u8)
    brain = brain_pixels(resized_u8)
    codes = np.ascontiguousarray(resized_u8.transpose(2, 0, 1)).astype(np.uint16)
    codes |= brain.astype(np.uint16) << 8
    codes += _CHANNEL_OFFSETS
    counts = np.bincount(codes.ravel(), minlength=3 * 512).reshape(3, 2, 256)
    mean, std = histogram_moments(counts[:, 1] if brain.sum() >= 64 else counts.sum(axis=1))
    std = np.maximum(std, MIN_STD)
    background = np.repeat((0.0 - mean) / std, 256).reshape(3, 256)
    table = np.concatenate([background, (_LEVELS - mean[:, None]) / std[:, None]], axis=1)
    return table.astype(np.float32).ravel().take(codes)


def restore_size(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a ``256x256`` probability map back to the original ``HxW`` (bilinear, pixel centres aligned, as
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``)."""
    probability = np.asarray(probability, dtype=np.float32)
    if probability.shape[-2:] == tuple(shape):
        return probability
    rows, row_weights = _bilinear_taps(probability.shape[0], shape[0])
    columns, column_weights = _bilinear_taps(probability.shape[1], shape[1])
    along_rows = probability[rows[0]] * (1 - row_weights[:, None]) + probability[rows[1]] * row_weights[:, None]
    return (along_rows[:, columns[0]] * (1 - column_weights) + along_rows[:, columns[1]] * column_weights
            ).astype(np.float32)


def _bilinear_taps(source: int, size: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """For each of ``size`` output pixels: the two source pixels it lies between and the second one's weight."""
    position = np.maximum((np.arange(size, dtype=np.float32) + 0.5) * np.float32(source / size) - 0.5, 0)
    low = np.minimum(position.astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return (low, high), (position - low).astype(np.float32)
