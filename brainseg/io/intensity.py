"""Scans stored in other encodings (12/16-bit, signed, float) mapped onto the dataset's 8-bit look.

Landmark standardisation (Nyul & Udupa 2000): percentile landmarks of the head's values mapped onto the training
patients' mean landmarks (``brainseg landmarks``), linear between and beyond them. Two landmarks ship (the 0.5th and
99.5th percentiles: a linear map, which kept every validation patient's Dice), so a positive linear change of the
stored values gives the same slices, and a monotone curve moves only the mid-tones. Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from brainseg.errors import BrainsegError
from brainseg.paths import WEIGHTS_DIR

LANDMARKS_FILE = "intensity.safetensors"
PERCENTILES = (0.5, 99.5)   # two landmarks: a linear map (chosen on the validation patients, docs/experiments.md)
MAX_SAMPLED_VOXELS = 4_000_000      # landmarks from a regular subsample of larger volumes
FLAIR = 1                           # channel index of FLAIR in the models' order (pre-contrast, FLAIR, post-contrast)
AS_STORED = "as stored (8-bit, the dataset's encoding)"
STANDARDISED = "standardised to the dataset's intensities (landmarks of the training patients)"


@dataclass(frozen=True)
class Landmarks:
    """The standard scale: per channel, the training patients' mean landmark values in 8-bit units.

    Attributes:
        volume: ``3xP`` float32, landmarks of whole volumes (rows: pre-contrast, FLAIR, post-contrast).
        slice: ``3xP`` float32, landmarks of single slices (for a lone 16-bit or float slice).
        percentiles: the ``P`` percentiles of the head's voxels the landmarks stand at.
    """

    volume: np.ndarray
    slice: np.ndarray
    percentiles: tuple[float, ...] = PERCENTILES


def head_values(values: np.ndarray) -> np.ndarray:
    """The finite values above the mean (the head, not the background), from at most ``MAX_SAMPLED_VOXELS``.

    The mean moves with a linear change of the values, so the same voxels are chosen whatever the encoding."""
    flat = np.asarray(values).reshape(-1)
    sample = flat[::max(1, flat.size // MAX_SAMPLED_VOXELS)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return sample
    return sample[sample > sample.mean()]


def landmarks_of(values: np.ndarray, percentiles: tuple[float, ...] = PERCENTILES) -> np.ndarray | None:
    """The ``P`` landmark values of a volume or slice (any dtype); ``None`` when it has no head (flat or empty)."""
    head = head_values(values)
    if head.size < 2:
        return None
    points = np.percentile(head, percentiles)
    return points if points[-1] > points[0] else None


def standardise(values: np.ndarray, standard: np.ndarray, percentiles: tuple[float, ...] = PERCENTILES,
                points: np.ndarray | None = None) -> np.ndarray:
    """``uint8`` of ``values`` with their landmarks moved onto ``standard``, linear between landmarks and beyond the
    outer ones (then clipped to 0..255); all zeros when the values have no head.

    Args:
        values: a volume or slice in any numeric dtype (NaN counts as the lowest value).
        standard: the ``P`` target landmark values (8-bit units), e.g. ``Landmarks.volume[channel]``.
        percentiles: the percentiles ``standard`` stands at.
        points: the values' own landmarks when already computed (a volume's, applied slice by slice).

    Returns:
        ``uint8`` array of the same shape.
    """
    points = landmarks_of(values, percentiles) if points is None else points
    data = np.asarray(values, dtype=np.float64)
    if points is None:
        return np.zeros(data.shape, np.uint8)
    data = np.where(np.isfinite(data), data, points[0] - 1e9)
    source = np.maximum.accumulate(points + np.arange(points.size) * 1e-9 * max(1.0, abs(points[-1])))
    target = np.asarray(standard, np.float64)
    mapped = np.interp(data, source, target)
    low_slope = (target[1] - target[0]) / (source[1] - source[0])
    high_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    mapped = np.where(data < source[0], target[0] + (data - source[0]) * low_slope, mapped)
    mapped = np.where(data > source[-1], target[-1] + (data - source[-1]) * high_slope, mapped)
    return np.clip(np.round(mapped), 0, 255).astype(np.uint8)


def save(landmarks: Landmarks, path: Path) -> None:
    """Write the landmarks as safetensors (numbers only, nothing pickled), the percentiles in its metadata."""
    from safetensors.numpy import save_file
    save_file({"volume": landmarks.volume.astype(np.float32), "slice": landmarks.slice.astype(np.float32)},
              str(path), metadata={"percentiles": ",".join(f"{p:g}" for p in landmarks.percentiles)})


@lru_cache(maxsize=4)
def load(weights_dir: Path = WEIGHTS_DIR) -> Landmarks:
    """The shipped landmarks, checked against ``SHA256SUMS`` like every weights file."""
    from safetensors import safe_open

    from brainseg.models.weights import verify
    path = Path(weights_dir) / LANDMARKS_FILE
    if not path.is_file():
        raise BrainsegError(f"{path}: intensity landmarks not found; expected the file `brainseg landmarks` writes "
                            "(weights/ ships it)")
    verify(path)
    with safe_open(str(path), framework="numpy") as handle:
        percentiles = tuple(float(p) for p in handle.metadata()["percentiles"].split(","))
        return Landmarks(handle.get_tensor("volume"), handle.get_tensor("slice"), percentiles)
