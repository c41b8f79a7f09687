"""Scans in other encodings, standardised onto the dataset's 8-bit look (brainseg.io.intensity), on a bundled
patient: the same voxels give the same slices whatever the storage, and 8-bit data stays as stored."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from brainseg.data.index import index_patient
from brainseg.evaluation.encodings import dicom_series, nifti, to_xyz
from brainseg.io import intensity
from brainseg.io.slices import read_slice, read_slice_mapped
from brainseg.io.volumes import read_volume
from brainseg.models.weights import read_checksums
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR

PATIENT = "TCGA_HT_7686_19950629"


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """``SxHxWx3 uint8``: the patient's slices as the gallery reads them."""
    return np.stack([read_slice(r.image_path) for r in index_patient(SAMPLES_DIR / PATIENT)])


def flair_scan(stored: np.ndarray) -> list[np.ndarray]:
    scan = read_volume([("flair.nii.gz", nifti(to_xyz(stored)))])
    return scan.images_u8


def test_shipped_landmarks_are_listed_increasing_and_in_8_bit_range() -> None:
    landmarks = intensity.load()
    assert intensity.LANDMARKS_FILE in read_checksums(WEIGHTS_DIR)
    assert landmarks.volume.shape == landmarks.slice.shape == (3, len(landmarks.head_percentiles) + 2)
    for standard in (*landmarks.volume, *landmarks.slice):
        assert np.all(np.diff(standard) > 0) and 0 <= standard[0] and standard[-1] <= 255


def test_a_linear_change_of_the_stored_values_gives_the_same_slices(volume: np.ndarray) -> None:
    flair = volume[..., 1]
    int16 = flair_scan(flair.astype(np.int16) * 16 + 100)
    float32 = flair_scan(flair.astype(np.float32) * 3.7 - 12.5)
    assert all(np.array_equal(a, b) for a, b in zip(int16, float32))
    assert int16[0].dtype == np.uint8 and int16[0].shape == flair.shape[1:] + (3,)


def test_a_mild_curve_keeps_the_landmarks_and_8_bit_stays_as_stored(volume: np.ndarray) -> None:
    flair = volume[..., 1]
    linear = np.stack(flair_scan(flair.astype(np.float32) * 16))[..., 1].astype(int)
    curved = np.stack(flair_scan((4000 * (flair / 255.0) ** 0.8).astype(np.float32)))[..., 1].astype(int)
    standard = intensity.load().volume[1]
    for mapped in (linear, curved):     # the ends land on the standard whatever the curve ...
        assert np.abs(intensity.landmarks_of(mapped) - standard).max() < 4
    levels = np.unique(flair)           # ... and the tones between keep their order (the curve moves them: a
    tones = [np.unique(curved[flair == level]) for level in levels]     # two-point map cannot tell it from anatomy)
    assert all(len(t) == 1 for t in tones) and np.all(np.diff([t[0] for t in tones]) >= 0)
    as_stored = read_volume([("flair.nii.gz", nifti(to_xyz(flair)))])
    assert as_stored.intensity == intensity.AS_STORED and not any("standardised" in n for n in as_stored.notes)
    assert all(np.array_equal(s[..., 1], f) for s, f in zip(as_stored.images_u8, flair))


def test_a_linear_copy_keeps_its_background_and_clips_nothing(volume: np.ndarray) -> None:
    """The outer landmarks are the scan's own ends: its darkest voxels land on the training minimum (the background
    stays background) and only its brightest voxels on the training maximum (bright tumour is not clipped flat)."""
    flair = volume[..., 1]
    mapped = np.stack(flair_scan(flair.astype(np.int16) * 16 + 100))[..., 1]
    low, high = np.round(intensity.load().volume[1][[0, -1]])
    assert np.all(mapped[flair == flair.min()] == low)
    assert np.array_equal(mapped == high, flair == flair.max())


def test_nan_and_infinite_voxels_do_not_move_the_others(volume: np.ndarray) -> None:
    flair = volume[..., 1].astype(np.float32) * 3.7
    spoilt = flair.copy()
    spoilt[0, :4, :4], spoilt[1, :4, :4], spoilt[2, :4, :4] = np.nan, np.inf, -np.inf
    clean, dirty = np.stack(flair_scan(flair))[..., 1], np.stack(flair_scan(spoilt))[..., 1]
    kept = np.ones(flair.shape, bool)
    kept[:3, :4, :4] = False
    assert np.array_equal(clean[kept], dirty[kept])
    low, high = np.round(intensity.load().volume[1][[0, -1]])
    assert dirty[0, 0, 0] == dirty[2, 0, 0] == low and dirty[1, 0, 0] == high


def test_a_16_bit_slice_is_standardised_and_says_so(volume: np.ndarray) -> None:
    flair = volume[len(volume) // 2, ..., 1]
    images = []
    for stored in (flair.astype(np.uint16) * 16, flair.astype(np.uint16) * 40 + 1000):
        buffer = io.BytesIO()
        Image.fromarray(stored.astype(np.uint16)).save(buffer, format="PNG")
        images.append(read_slice_mapped(buffer.getvalue(), "flair16.png"))
    (first, mapping), (second, _) = images
    assert mapping == intensity.STANDARDISED and np.array_equal(first, second)
    assert read_slice_mapped(_png(volume[0]), "rgb.png")[1] == intensity.AS_STORED


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- DICOM as scanners write it: each variant reads as the plain 12-bit series ---------------------------------

@pytest.fixture(scope="module")
def plain_dicom(volume: np.ndarray) -> list[np.ndarray]:
    scan = read_volume([("plain.zip", dicom_series(volume[..., 1].astype(np.uint16) * 16))])
    assert scan.intensity == intensity.STANDARDISED and any("standardised" in n for n in scan.notes)
    return scan.images_u8


def same_slices(files: bytes, expected: list[np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(read_volume([("series.zip", files)]).images_u8, expected))


def test_dicom_rescale_slope_and_intercept_are_applied_slice_by_slice(volume: np.ndarray, plain_dicom) -> None:
    """Each slice stored with its own slope (some scanners do), real values those of the plain series: read right
    only if every slice's rescale is applied."""
    slopes = 1.0 + 0.25 * (np.arange(len(volume)) % 4)
    stored = np.round((volume[..., 1].astype(np.float64) * 16 + 50.0) / slopes[:, None, None]).astype(np.uint16)
    scan = read_volume([("varied.zip", dicom_series(stored, slope=slopes, intercept=-50.0))])
    changed = [np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(scan.images_u8, plain_dicom)]
    assert max(changed) <= 1   # the stored values' rounding only


def test_dicom_monochrome1_signed_and_12_bit_read_as_the_plain_series(volume: np.ndarray, plain_dicom) -> None:
    stored = volume[..., 1].astype(np.int32) * 16
    assert same_slices(dicom_series(4095 - stored, monochrome1=True), plain_dicom)
    assert same_slices(dicom_series(stored - 2048, signed=True), plain_dicom)
    assert same_slices(dicom_series(stored, bits=12), plain_dicom)
