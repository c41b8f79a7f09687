"""Slice and mask decoding: the byte-exact Kaggle originals, other formats made from a shipped slice, and bad input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg.errors import BrainsegError
from brainseg.io import intensity
from brainseg.io.slices import encode_png, read_mask, read_slice, read_slice_mapped

TUMOUR = "TCGA_CS_4942_19970222_11"
HEALTHY = "TCGA_CS_4942_19970222_3"
TUMOUR_PIXELS = {TUMOUR: 1539, HEALTHY: 0}     # ../shared/lgg/manifest.json


def pillow_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tumour_image(sample_slice: Path) -> np.ndarray:
    """A real tumour slice the repository ships, decoded by Pillow directly (256x256x3 uint8)."""
    return pillow_pixels(sample_slice)


# ---- the four byte-exact Kaggle files -------------------------------------------------------------

@pytest.mark.parametrize("stem", [TUMOUR, HEALTHY])
def test_kaggle_original_image(originals: Path, stem: str) -> None:
    image = read_slice(originals / f"{stem}.tif")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, pillow_pixels(originals / f"{stem}.tif"))


@pytest.mark.parametrize("stem", [TUMOUR, HEALTHY])
def test_kaggle_original_mask_matches_pillow_and_manifest(originals: Path, stem: str) -> None:
    mask = read_mask(originals / f"{stem}_mask.tif", shape=(256, 256))
    assert mask.shape == (256, 256) and mask.dtype == bool
    expected = int(np.count_nonzero(pillow_pixels(originals / f"{stem}_mask.tif")))
    assert int(mask.sum()) == expected == TUMOUR_PIXELS[stem]
    assert (expected > 0) == (stem == TUMOUR)


def test_tif_from_bytes_equals_tif_from_path(originals: Path) -> None:
    path = originals / f"{TUMOUR}.tif"
    np.testing.assert_array_equal(read_slice(path.read_bytes(), name=path.name), read_slice(path))
    mask_path = originals / f"{TUMOUR}_mask.tif"
    np.testing.assert_array_equal(read_mask(mask_path.read_bytes(), name=mask_path.name), read_mask(mask_path))


def test_mask_shape_mismatch_names_file(originals: Path) -> None:
    with pytest.raises(BrainsegError, match=f"{TUMOUR}_mask.tif.*expected 128x128"):
        read_mask(originals / f"{TUMOUR}_mask.tif", shape=(128, 128))


# ---- other formats, generated from the real slice ---------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_lossless_formats_keep_pixels(tumour_image: np.ndarray, fmt: str) -> None:
    np.testing.assert_array_equal(read_slice(encoded(tumour_image, fmt), name=f"slice.{fmt.lower()}"), tumour_image)


def test_jpeg_is_close_to_original(tumour_image: np.ndarray) -> None:
    image = read_slice(encoded(tumour_image, "JPEG", quality=95), name="slice.jpg")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - tumour_image).mean() < 3


def test_grayscale_is_replicated_to_three_channels(tumour_image: np.ndarray) -> None:
    flair = tumour_image[..., 1]
    image = read_slice(encoded(flair, "PNG"), name="flair.png")
    assert image.shape == (256, 256, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], flair)


def test_rgba_drops_alpha(tumour_image: np.ndarray) -> None:
    alpha = np.full((256, 256, 1), 128, np.uint8)
    rgba = np.concatenate([tumour_image, alpha], axis=2)
    np.testing.assert_array_equal(read_slice(encoded(rgba, "PNG"), name="rgba.png"), tumour_image)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_standardised_whatever_its_range(tumour_image: np.ndarray, fmt: str) -> None:
    values = tumour_image[..., 1].astype(np.uint16) * 97 + 700   # a 16-bit range far from 0..255
    image, mapping = read_slice_mapped(encoded(values, fmt), name=f"slice16.{fmt.lower()}")
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3) and mapping == intensity.STANDARDISED
    expected = intensity.standardise(values, intensity.load().slice[intensity.FLAIR])
    assert np.array_equal(image[..., 0], expected) and np.array_equal(image[..., 0], image[..., 2])
    other = read_slice(encoded(tumour_image[..., 1].astype(np.uint16) * 16, fmt), name="other16")
    assert np.array_equal(image, other)                              # the same slice at another scale


@pytest.mark.parametrize("size", [(173, 201), (300, 512), (64, 64)])
def test_odd_sizes_keep_their_size(tumour_image: np.ndarray, size: tuple[int, int]) -> None:
    height, width = size
    source = np.asarray(Image.fromarray(tumour_image).resize((width, height), Image.BILINEAR))
    image = read_slice(encoded(source, "PNG"), name="odd.png")
    assert image.shape == (height, width, 3)
    np.testing.assert_array_equal(image, source)


def test_mask_any_nonzero_is_tumour(sample_mask: Path) -> None:
    kaggle = pillow_pixels(sample_mask)
    faint = np.where(kaggle > 0, 1, 0).astype(np.uint8)          # 0/1 instead of 0/255
    mask = read_mask(encoded(faint, "PNG"), name="mask.png")
    np.testing.assert_array_equal(mask, kaggle > 0)
    rgb = np.repeat(faint[..., None], 3, axis=2) * 200
    np.testing.assert_array_equal(read_mask(encoded(rgb, "PNG"), name="mask_rgb.png"), kaggle > 0)


def test_encode_png_round_trip(tumour_image: np.ndarray, sample_mask: Path) -> None:
    np.testing.assert_array_equal(read_slice(encode_png(tumour_image)), tumour_image)
    mask = read_mask(sample_mask)
    np.testing.assert_array_equal(read_mask(encode_png(mask)), mask)


# ---- bad input: one line, names the file ---------------------------------------------------------

def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert name in message
    assert "\n" not in message


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "slice_1.tif"
    with pytest.raises(BrainsegError) as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(BrainsegError, match="empty") as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.tif"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(BrainsegError) as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not a slice\n" * 50)
    with pytest.raises(BrainsegError) as error:
        read_mask(path)
    assert_one_line_naming(error, str(path))


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, tumour_image: np.ndarray, fmt: str) -> None:
    data = encoded(tumour_image, fmt)
    path = tmp_path / f"truncated.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BrainsegError) as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncated_kaggle_tif_from_bytes(originals: Path) -> None:
    data = (originals / f"{TUMOUR}.tif").read_bytes()
    with pytest.raises(BrainsegError) as error:
        read_slice(data[: len(data) // 3], name="upload_11.tif")
    assert_one_line_naming(error, "upload_11.tif")


def test_corrupt_png_data(tmp_path: Path, tumour_image: np.ndarray) -> None:
    data = encoded(tumour_image, "PNG")
    corrupt = data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:]
    path = tmp_path / "corrupt.png"
    path.write_bytes(corrupt)
    with pytest.raises(BrainsegError, match="corrupt") as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_tif_header(tmp_path: Path, originals: Path) -> None:
    data = (originals / f"{TUMOUR}.tif").read_bytes()
    path = tmp_path / "corrupt_header.tif"
    path.write_bytes(data[:4] + b"\xff" * 8 + data[12:])
    with pytest.raises(BrainsegError) as error:
        read_slice(path)
    assert_one_line_naming(error, str(path))


def test_too_small_image_is_refused(tumour_image: np.ndarray) -> None:
    with pytest.raises(BrainsegError, match="too small") as error:
        read_slice(encoded(tumour_image[:8, :8], "PNG"), name="tiny.png")
    assert_one_line_naming(error, "tiny.png")
