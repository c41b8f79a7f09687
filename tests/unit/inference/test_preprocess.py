"""The one preprocessing step: shape, dtype, brain z-score, any input size, and mapping back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg.io.slices import read_slice
from brainseg.preprocess import MODEL_SIZE, brain_pixels, preprocess, resize_image, resize_mask, restore_size


@pytest.fixture(scope="module")
def slice_u8(sample_slice: Path) -> np.ndarray:
    return read_slice(sample_slice)


def test_shape_and_dtype(slice_u8: np.ndarray) -> None:
    tensor = preprocess(slice_u8)
    assert tensor.shape == (3, MODEL_SIZE, MODEL_SIZE) and tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    assert np.isfinite(tensor).all()


def test_brain_pixels_are_z_scored_per_channel(slice_u8: np.ndarray) -> None:
    tensor = preprocess(slice_u8)
    brain = brain_pixels(slice_u8)
    assert 0.2 < brain.mean() < 0.9        # a real axial slice: brain surrounded by background
    for channel in tensor:
        assert abs(float(channel[brain].mean())) < 1e-3
        assert abs(float(channel[brain].std()) - 1.0) < 1e-3


def test_matches_a_float64_z_score_on_any_slice(slice_u8: np.ndarray) -> None:
    """The table lookup against the formula in float64: a real slice, one with almost no brain (every pixel
    counts then), a flat one (the minimum spread) and a random one of another size."""
    rng = np.random.default_rng(0)
    nearly_empty = np.zeros((256, 256, 3), np.uint8)
    nearly_empty[:5, :5] = 200
    for image in (slice_u8, nearly_empty, np.full((256, 256, 3), 90, np.uint8),
                  rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)):
        resized = resize_image(image).astype(np.float64)
        brain = brain_pixels(resize_image(image))
        pixels = resized[brain] if brain.sum() >= 64 else resized.reshape(-1, 3)
        mean, std = pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 8.0)
        expected = np.where(brain[..., None], (resized - mean) / std, (0.0 - mean) / std).transpose(2, 0, 1)
        assert np.abs(preprocess(image) - expected).max() < 1e-5


def test_background_is_one_constant_per_channel(slice_u8: np.ndarray) -> None:
    tensor = preprocess(slice_u8)
    background = ~brain_pixels(slice_u8)
    for channel in tensor:
        assert np.ptp(channel[background]) == 0
        assert channel[background][0] < channel[~background].mean()


def test_same_slice_at_another_intensity_scale_gives_same_input(slice_u8: np.ndarray) -> None:
    darker = (slice_u8.astype(np.float32) * 0.6).round().astype(np.uint8)
    difference = np.abs(preprocess(darker) - preprocess(slice_u8))
    brain = brain_pixels(slice_u8) & brain_pixels(darker)
    assert float(np.median(difference[:, brain])) < 0.05


@pytest.mark.parametrize("size", [(173, 201), (512, 512), (300, 224)])
def test_any_size_goes_to_model_size(slice_u8: np.ndarray, size: tuple[int, int]) -> None:
    height, width = size
    resized = np.asarray(Image.fromarray(slice_u8).resize((width, height), Image.BILINEAR))
    tensor = preprocess(resized)
    assert tensor.shape == (3, MODEL_SIZE, MODEL_SIZE)
    # resized back to 256 the content is the same slice: strongly correlated with the direct input
    correlation = np.corrcoef(tensor[1].ravel(), preprocess(slice_u8)[1].ravel())[0, 1]
    assert correlation > 0.95


def test_resize_is_a_no_op_at_model_size(slice_u8: np.ndarray) -> None:
    assert resize_image(slice_u8) is slice_u8
    mask = slice_u8[..., 1] > 100
    assert resize_mask(mask) is mask
    small = resize_mask(mask, 128)
    assert small.shape == (128, 128) and small.dtype == bool
    assert abs(small.mean() - mask.mean()) < 0.01


@pytest.mark.parametrize("shape", [(173, 201), (512, 512), (256, 256)])
def test_restore_size_maps_back(shape: tuple[int, int]) -> None:
    probability = np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    probability[64:192, 32:96] = 1.0                 # a box: rows 1/4..3/4, columns 1/8..3/8
    restored = restore_size(probability, shape)
    assert restored.shape == shape and restored.dtype == np.float32
    assert 0.0 <= restored.min() and restored.max() <= 1.0
    height, width = shape
    assert restored[height // 2, width // 4] > 0.99          # inside the box
    assert restored[height // 2, width // 2] < 0.01          # outside it
    assert abs(float((restored > 0.5).mean()) - 0.125) < 0.01


def test_restore_size_inverts_resize_of_a_mask(sample_mask: Path) -> None:
    mask = np.asarray(Image.open(sample_mask)) > 0
    odd = resize_mask(mask, 200)                                   # a 200x200 upload's mask
    round_trip = restore_size(resize_mask(odd).astype(np.float32), (200, 200)) > 0.5
    intersection = np.logical_and(round_trip, odd).sum()
    assert 2 * intersection / (round_trip.sum() + odd.sum()) > 0.95
