"""Scans stored in other encodings (12/16-bit, signed, float) mapped onto the dataset's 8-bit look.

Landmark standardisation (Nyul & Udupa 2000) whose outer landmarks are the scan's minimum and maximum: the dataset's
volumes read as scaled by their own range (minimum 0, maximum near 249 in every training volume; docs/experiments.md),
so pinning the ends gives a linearly stored copy its 8-bit picture back without clipping its brightest tissue. Inner
landmarks, percentiles of the head, hold the head's low end where a curve applied to the values would move it (only
in part: a curve cannot be told from a patient's own contrast, docs/volumes.md). Each landmark is mapped onto the
training patients' mean (``brainseg landmarks``), linear between. A positive linear change of the stored values
gives the same slices. Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from brainseg.errors import BrainsegError
from brainseg.paths import WEIGHTS_DIR

LANDMARKS_FILE = "intensity.safetensors"
HEAD_PERCENTILES = (0.5, 99.5)      # inner landmarks, between minimum and maximum (docs/experiments.md)
MAX_SAMPLED_VOXELS = 4_000_000      # the head's percentiles from a regular subsample of larger volumes
FLAIR = 1                           # channel index of FLAIR in the models' order (pre-contrast, FLAIR, post-contrast)
AS_STORED = "as stored (8-bit, the dataset's encoding)"
STANDARDISED = "standardised to the dataset's intensities (landmarks of the training patients)"


@dataclass(frozen=True)
class Landmarks:
    """The standard scale: per channel, the training patients' mean landmarks in 8-bit units (minimum, the head's
    percentiles, maximum).

    Attributes:
        volume: ``3xL`` float32, of whole volumes (rows: pre-contrast, FLAIR, post-contrast).
        slice: ``3xL`` float32, of single slices with some head (for a lone 16-bit or float slice).
        head_percentiles: the percentiles of the head the inner landmarks stand at.
    """

    volume: np.ndarray
    slice: np.ndarray
    head_percentiles: tuple[float, ...] = HEAD_PERCENTILES


def value_range(values: np.ndarray) -> tuple[float, float] | None:
    """Minimum and maximum of the finite values (any dtype), reduced plane by plane so that a large float volume (or
    a channel's strided view) is never copied whole; ``None`` when there are none."""
    data = np.asarray(values)
    floating = np.issubdtype(data.dtype, np.floating)
    lows, highs = [], []
    for part in data if data.ndim > 1 else [data]:
        part = part[np.isfinite(part)] if floating else part
        if part.size:
            lows.append(part.min())
            highs.append(part.max())
    return (float(min(lows)), float(max(highs))) if lows else None


def head_values(values: np.ndarray) -> np.ndarray:
    """The finite values above the mean (the head, not the background), from at most ``MAX_SAMPLED_VOXELS``.

    The mean moves with a linear change of the values, so the same voxels are chosen whatever the encoding."""
    flat = np.asarray(values).reshape(-1)
    sample = flat[::max(1, flat.size // MAX_SAMPLED_VOXELS)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    return sample[sample > sample.mean()] if sample.size else sample


def landmarks_of(values: np.ndarray, head_percentiles: tuple[float, ...] = HEAD_PERCENTILES) -> np.ndarray | None:
    """The landmarks of a volume or slice (any dtype): minimum, the head's percentiles, maximum, non-decreasing;
    ``None`` when it is flat or empty."""
    ends = value_range(values)
    if ends is None or ends[1] <= ends[0]:
        return None
    head = head_values(values)
    inner = np.percentile(head, head_percentiles) if head.size and head_percentiles else np.empty(0)
    return np.concatenate([[ends[0]], inner, [ends[1]]])


def standardise(values: np.ndarray, standard: np.ndarray, points: np.ndarray | None = None,
                head_percentiles: tuple[float, ...] = HEAD_PERCENTILES) -> np.ndarray:
    """``uint8`` of ``values`` with their landmarks moved onto ``standard``, linear between (the outer landmarks are
    the values' own ends, so nothing lies beyond them); all zeros when the values are flat or empty.

    Args:
        values: a volume or slice in any numeric dtype (NaN counts as the minimum, infinities as the ends).
        standard: the target landmarks (8-bit units), e.g. ``Landmarks.volume[channel]``.
        points: the values' own landmarks when already computed (a volume's, applied slice by slice).
        head_percentiles: where the inner landmarks stand, when ``points`` is not given.

    Returns:
        ``uint8`` array of the same shape.
    """
    points = landmarks_of(values, head_percentiles) if points is None else points
    data = np.asarray(values, dtype=np.float64)
    if points is None:
        return np.zeros(data.shape, np.uint8)
    source = np.maximum.accumulate(points + np.arange(points.size) * 1e-9 * max(1.0, abs(points[-1])))
    target = np.asarray(standard, np.float64)
    mapped = np.nan_to_num(np.interp(data, source, target), nan=target[0])
    return np.clip(np.round(mapped), 0, 255).astype(np.uint8)


def save(landmarks: Landmarks, path: Path) -> None:
    """Write the landmarks as safetensors (numbers only, nothing pickled)."""
    from safetensors.numpy import save_file
    save_file({"volume": landmarks.volume.astype(np.float32), "slice": landmarks.slice.astype(np.float32)},
              str(path), metadata={"head_percentiles": ",".join(f"{p:g}" for p in landmarks.head_percentiles)})


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
        listed = handle.metadata()["head_percentiles"]
        percentiles = tuple(float(p) for p in listed.split(",")) if listed else ()
        return Landmarks(handle.get_tensor("volume"), handle.get_tensor("slice"), percentiles)
