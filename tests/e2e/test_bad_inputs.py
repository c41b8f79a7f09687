"""Hostile and odd uploads, generated here: each is read as documented or refused with a BrainsegError naming it.

Decisions: the content decides the format, not the suffix (a .tif renamed .jpg is read as the TIFF it is);
16-bit slices are rescaled by their range, RGBA loses its alpha, CMYK is converted; 1-bit images are
masks, not slices; sizes are checked from the header before any pixel is decoded.
"""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg.app.cache import pair_uploads
from brainseg.errors import BrainsegError
from brainseg.io.slices import MAX_ASPECT_RATIO, MAX_PIXELS, MIN_SIDE, read_mask, read_slice
from brainseg.paths import SAMPLES_DIR


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bomb(side: int) -> bytes:
    """A valid 1-bit ``side x side`` PNG of zeros: ~110 kB on disk for 30000x30000, 900 M pixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (side + 7) // 8)        # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def refused(reader, source, name: str, match: str) -> BrainsegError:
    with pytest.raises(BrainsegError, match=match) as caught:
        reader(source, name)
    assert name in str(caught.value), f"the message must name the file: {caught.value}"
    return caught.value


@pytest.fixture(scope="module")
def kaggle_slice(sample_slice: Path) -> Path:
    """A real Kaggle slice in its layout (shipped in samples/, re-encoded losslessly)."""
    return sample_slice


@pytest.fixture(scope="module")
def kaggle_mask(sample_mask: Path) -> Path:
    return sample_mask


def test_zero_byte_file(tmp_path: Path):
    refused(read_slice, b"", "empty.tif", "empty")
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    refused(read_slice, path, str(path), "empty")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_kaggle_tif(originals: Path, keep: float):
    data = (originals / "TCGA_CS_4942_19970222_11.tif").read_bytes()      # Kaggle's own bytes
    refused(read_slice, data[:int(len(data) * keep)], "cut.tif", "not a readable image|corrupt or truncated")


def test_truncated_png_with_intact_header(kaggle_slice: Path):
    data = encode(read_slice(kaggle_slice))
    refused(read_slice, data[:len(data) // 2], "cut.png", "corrupt or truncated")


def test_random_bytes_named_png():
    noise = np.random.default_rng(0).bytes(20_000)
    refused(read_slice, noise, "noise.png", "not a readable image")


def test_tif_renamed_jpg_is_read_by_its_content(kaggle_slice: Path, tmp_path: Path):
    renamed = tmp_path / "slice.jpg"
    renamed.write_bytes(kaggle_slice.read_bytes())
    np.testing.assert_array_equal(read_slice(renamed), read_slice(kaggle_slice))


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path):
    bomb = png_bomb(30_000)
    assert len(bomb) < 200_000 and 30_000 ** 2 > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    for source, name in ((bomb, "bomb.png"), (path, str(path))):
        start = time.perf_counter()
        refused(read_slice, source, name, "too many pixels|too large")
        refused(read_mask, source, name, "too many pixels|too large")
        # decoding 0.9 Gpx would take 2.7 GB and far longer than this generous bound, even on a loaded CI machine
        assert time.perf_counter() - start < 5, "refused from the header, before decoding"


def test_just_over_the_pixel_limit_is_refused_too():
    side = int(MAX_PIXELS ** 0.5) + 1     # under Pillow's own 2x bomb threshold: our check must catch it
    refused(read_slice, png_bomb(side), "big.png", "too many pixels|too large")


def test_16_bit_slice_is_standardised_monotone_and_flat_is_black():
    ramp = np.linspace(1000, 40000, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = read_slice(encode(ramp), "ramp16.png")
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.min() < image.max() and np.all(np.diff(image[..., 0].ravel().astype(int)) >= 0)
    flat = read_slice(encode(np.full((64, 64), 1234, np.uint16)), "flat16.png")
    assert flat.max() == 0


def test_1_bit_image_is_a_mask_not_a_slice():
    bits = encode(np.eye(32, dtype=bool))
    refused(read_slice, bits, "bits.png", "1-bit")
    np.testing.assert_array_equal(read_mask(bits, "bits_mask.png"), np.eye(32, dtype=bool))


def test_4_channel_images(kaggle_slice: Path):
    rgb = read_slice(kaggle_slice)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    np.testing.assert_array_equal(read_slice(encode(rgba), "rgba.png"), rgb)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, format="TIFF")
    converted = read_slice(buffer.getvalue(), "cmyk.tif")
    assert converted.shape == rgb.shape and np.abs(converted.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("height, width, match", [(8, 8, "too small"), (300, 4000, "aspect ratio"),
                                                  (4000, 300, "aspect ratio")])
def test_tiny_and_extreme_shapes_are_refused(height: int, width: int, match: str):
    name = f"{width}x{height}.png"
    message = refused(read_slice, encode(np.zeros((height, width), np.uint8)), name, match)
    assert f"{width}x{height}" in str(message)


def test_limits_at_their_edges_are_accepted():
    assert read_slice(encode(np.zeros((MIN_SIDE, MIN_SIDE), np.uint8)), "small.png").shape == (MIN_SIDE, MIN_SIDE, 3)
    long = int(64 * MAX_ASPECT_RATIO)
    assert read_slice(encode(np.zeros((64, long), np.uint8)), "wide.png").shape == (64, long, 3)


def animation(fmt: str) -> bytes:
    """Three 64x64 frames as an animated GIF or a multi-page TIFF."""
    frames = [Image.fromarray(np.full((64, 64), value, np.uint8)) for value in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_animated_gif_and_multipage_tiff():
    refused(read_slice, animation("GIF"), "cine.gif", "3 frames")
    refused(read_slice, animation("TIFF"), "stack.tif", "3 frames")


def test_mask_of_the_wrong_size(kaggle_mask: Path):
    small = encode(np.zeros((128, 128), np.uint8))
    with pytest.raises(BrainsegError, match="small_mask.png: mask is 128x128; expected 256x256") as caught:
        read_mask(small, "small_mask.png", shape=(256, 256))
    assert read_mask(kaggle_mask, shape=(256, 256)).shape == (256, 256), caught


def test_mask_with_more_than_two_levels_is_refused(kaggle_slice: Path, kaggle_mask: Path):
    refused(read_mask, encode(read_slice(kaggle_slice)[..., 1]), "slice_as_mask.png", "grey levels")
    truth = read_mask(kaggle_mask)
    jpeg = encode(truth.astype(np.uint8) * 255, "JPEG", quality=75)
    refused(read_mask, jpeg, "lossy_mask.jpg", "grey levels")
    labels = encode(truth.astype(np.uint8))                         # 0/1 label map: two levels, accepted
    np.testing.assert_array_equal(read_mask(labels, "labels_mask.png"), truth)


def test_real_masks_are_two_level(originals: Path):
    masks = sorted(originals.glob("*_mask.tif")) + sorted(SAMPLES_DIR.glob("*/*_mask.tif"))
    assert len(masks) >= 2
    assert sum(read_mask(path).any() for path in masks) >= 1


def test_mask_without_its_image(kaggle_slice: Path, kaggle_mask: Path):
    """The app's pairing: the orphan mask is named back to the user; the slice and its own mask still pair."""
    files = [("a.tif", kaggle_slice.read_bytes()), ("a_mask.tif", kaggle_mask.read_bytes()),
             ("orphan_mask.tif", kaggle_mask.read_bytes()), ("b.png", b"")]
    pairs, unpaired = pair_uploads(files)
    assert [(name, mask[0] if mask else None) for name, _, mask in pairs] == [("a.tif", "a_mask.tif"), ("b.png", None)]
    assert unpaired == ["orphan_mask.tif"]


def test_a_batch_keeps_its_good_files(kaggle_slice: Path, kaggle_mask: Path):
    """What the app does with a batch: every good file is read, every bad one yields its own message."""
    uploads = [("TCGA_11.tif", kaggle_slice.read_bytes()), ("TCGA_11_mask.tif", kaggle_mask.read_bytes()),
               ("empty.png", b""), ("noise.png", b"\x00\x01garbage"), ("bomb.png", png_bomb(30_000)),
               ("cine.gif", animation("GIF")), ("lonely_mask.png", encode(np.zeros((64, 64), np.uint8)))]
    pairs, unpaired = pair_uploads(uploads)
    read, messages = {}, []
    for image_name, data, mask in pairs:
        try:
            image = read_slice(data, image_name)
            truth = read_mask(mask[1], mask[0], image.shape[:2]) if mask else None
        except BrainsegError as err:
            messages.append(str(err))
        else:
            read[image_name] = (image, truth)
    assert list(read) == ["TCGA_11.tif"] and read["TCGA_11.tif"][1].any()
    assert sorted(m.split(":")[0] for m in messages) == ["bomb.png", "cine.gif", "empty.png", "noise.png"]
    assert unpaired == ["lonely_mask.png"]
