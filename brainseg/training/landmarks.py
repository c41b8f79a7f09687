"""Fit the intensity standard (:mod:`brainseg.io.intensity`) on the training patients' own 8-bit volumes."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from brainseg.data.index import SliceRecord
from brainseg.io.intensity import FLAIR, HEAD_PERCENTILES, Landmarks, landmarks_of
from brainseg.io.slices import read_slice
from brainseg.preprocess import BACKGROUND_LEVEL

MIN_HEAD_SHARE = 0.1   # a slice counts for the single-slice standard when this share of it is brighter than background


def patient_volume(records: Sequence[SliceRecord]) -> np.ndarray:
    """``SxHxWx3 uint8``: a patient's slices stacked in slice order."""
    return np.stack([read_slice(r.image_path) for r in records])


def real_channels(volume: np.ndarray) -> list[int]:
    """The channels that hold their own sequence: FLAIR, and pre-/post-contrast unless the dataset filled them with
    a copy of FLAIR (where a patient lacks that sequence)."""
    return [c for c in range(3) if c == FLAIR or not np.array_equal(volume[..., c], volume[..., FLAIR])]


def fit_landmarks(patients: Mapping[str, Sequence[SliceRecord]],
                  head_percentiles: tuple[float, ...] = HEAD_PERCENTILES) -> Landmarks:
    """The mean landmarks of each channel over the patients' volumes, and over their slices with some head.

    Args:
        patients: each training patient's slice records, in slice order.
        head_percentiles: where the inner landmarks stand (percentiles of the head's values).

    Returns:
        The standard scale, in the dataset's 8-bit units.
    """
    volumes: list[list[np.ndarray]] = [[], [], []]
    slices: list[list[np.ndarray]] = [[], [], []]
    for records in tqdm(patients.values(), desc="landmarks", unit="patient"):
        volume = patient_volume(records)
        for channel in real_channels(volume):
            points = landmarks_of(volume[..., channel], head_percentiles)
            if points is not None:
                volumes[channel].append(points)
            for plane in volume[..., channel]:
                if (plane > BACKGROUND_LEVEL).mean() >= MIN_HEAD_SHARE:
                    points = landmarks_of(plane, head_percentiles)
                    if points is not None:
                        slices[channel].append(points)
    return Landmarks(np.array([np.mean(v, axis=0) for v in volumes], np.float32),
                     np.array([np.mean(s, axis=0) for s in slices], np.float32), tuple(head_percentiles))
