"""Decode MRI slices and masks from paths or uploaded bytes into plain numpy arrays.

Every reader returns ``image_u8: HxWx3 uint8`` or ``mask: HxW bool``; anything that cannot be read that
way raises :class:`BrainsegError` with the file's name and what was expected.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from brainseg.errors import BrainsegError
from brainseg.io import intensity

Source = str | Path | bytes

SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")  # what the uploader offers; the content decides the format
MAX_PIXELS = 4096 * 4096  # checked from the header, before any pixel is decoded
MIN_SIDE = 16
MAX_ASPECT_RATIO = 4.0    # longer side / shorter side: an MRI slice is close to square
MAX_BYTES = 50 * 1024 * 1024
MAX_FILES_PER_BATCH = 100  # files in one upload batch (slices and masks): a whole Kaggle patient's slices fit

# Pillow's own bomb guard warns at MAX_IMAGE_PIXELS and refuses at twice that; ours is stricter and first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _open(source: Source, name: str) -> Image.Image:
    """Open an image lazily (header only) and check its size before decoding."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise BrainsegError(f"{name}: the file is empty (0 bytes); expected a .tif, .png or .jpg image")
        if len(source) > MAX_BYTES:
            raise BrainsegError(f"{name}: {len(source) / 2**20:.0f} MB is too large; expected at most "
                                f"{MAX_BYTES // 2**20} MB")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise BrainsegError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise BrainsegError(f"{name}: the file is empty (0 bytes); expected a .tif, .png or .jpg image")
        stream = io.BytesIO(path.read_bytes())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        if isinstance(err, UnidentifiedImageError):
            raise BrainsegError(f"{name}: not a readable image; expected a .tif, .png or .jpg MRI slice") from None
        raise BrainsegError(f"{name}: too many pixels; expected at most {MAX_PIXELS:,} pixels") from None
    except OSError as err:
        raise BrainsegError(f"{name}: cannot be read as an image ({err})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise BrainsegError(f"{name}: {width}x{height} is too large; expected at most {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise BrainsegError(f"{name}: {width}x{height} is too small; expected at least {MIN_SIDE} pixels a side")
    aspect_ratio = max(width, height) / min(width, height)
    if aspect_ratio > MAX_ASPECT_RATIO:
        raise BrainsegError(f"{name}: {width}x{height} has an aspect ratio of {aspect_ratio:.1f}:1; expected a "
                            f"roughly square slice (at most {MAX_ASPECT_RATIO:g}:1)")
    if getattr(image, "n_frames", 1) > 1:
        raise BrainsegError(f"{name}: has {image.n_frames} frames; expected a single still slice")
    return image


def _decode(image: Image.Image, name: str) -> np.ndarray:
    """Decode the pixels; truncated or corrupt data raises BrainsegError."""
    try:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        array = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise BrainsegError(f"{name}: the image data is corrupt or truncated ({err})") from None
    return array


def _to_u8(array: np.ndarray) -> tuple[np.ndarray, str]:
    """``HxWxC`` (C = 1 or 3) as uint8, and how: 8-bit as stored, any other dtype (16-bit PNG or TIFF, float TIFF)
    standardised per channel onto the training slices' landmarks (one channel is taken as FLAIR)."""
    if array.dtype == np.uint8:
        return array, intensity.AS_STORED
    if array.dtype == bool:
        return array.astype(np.uint8) * 255, intensity.AS_STORED
    landmarks = intensity.load()
    roles = (intensity.FLAIR,) if array.shape[2] == 1 else (0, 1, 2)
    channels = [intensity.standardise(array[..., c], landmarks.slice[role], head_percentiles=landmarks.head_percentiles)
                for c, role in enumerate(roles)]
    return np.stack(channels, axis=2), intensity.STANDARDISED


def _source_name(source: Source, name: str | None) -> str:
    if name:
        return name
    return "upload" if isinstance(source, (bytes, bytearray)) else str(source)


def read_slice(source: Source, name: str | None = None) -> np.ndarray:
    """Read one slice as ``image_u8: HxWx3``: grayscale is replicated, alpha dropped, 16-bit and float standardised
    (:func:`read_slice_mapped` also says which)."""
    return read_slice_mapped(source, name)[0]


def read_slice_mapped(source: Source, name: str | None = None) -> tuple[np.ndarray, str]:
    """The slice as ``image_u8: HxWx3`` and how its values became 8-bit (:mod:`brainseg.io.intensity`)."""
    name = _source_name(source, name)
    image = _open(source, name)
    if image.mode == "1":
        raise BrainsegError(f"{name}: a 1-bit black-and-white image; expected a grayscale or colour MRI slice "
                            "(a mask? name it <slice>_mask.png)")
    array = _decode(image, name)
    if array.ndim == 3 and array.shape[2] == 4:      # RGBA / LA stored as 4 channels
        array = array[..., :3]
    elif array.ndim == 3 and array.shape[2] == 2:    # LA: luminance and alpha
        array = array[..., 0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise BrainsegError(f"{name}: pixel layout {array.shape} is not supported; expected grayscale, RGB or RGBA")
    image, mapping = _to_u8(array)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image), mapping


def read_mask(source: Source, name: str | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask as ``mask: HxW bool`` (any non-zero pixel is tumour); check it against ``shape``.

    A mask holds two levels (Kaggle: 0 and 255; 0 and 1 also do); more levels (a slice, or a JPEG's
    compression noise) are refused rather than guessed at.

    Args:
        source: the mask file's path, or its bytes.
        name: the name in error messages; ``None``: the path, or ``"upload"`` for bytes.
        shape: ``(H, W)`` of its image, which the mask must match; ``None``: not checked.

    Returns:
        ``HxW bool`` mask.
    """
    name = _source_name(source, name)
    array = _decode(_open(source, name), name)
    if array.ndim == 3:
        array = array[..., :3].max(axis=2) if array.shape[2] >= 3 else array[..., 0]
    mask = array != 0
    if np.count_nonzero(mask & (array != array.max())):
        raise BrainsegError(f"{name}: mask holds {len(np.unique(array))} grey levels; expected only two (0 = "
                            "background, 255 = tumour), saved losslessly as .tif or .png")
    if shape is not None and mask.shape != tuple(shape):
        raise BrainsegError(f"{name}: mask is {mask.shape[1]}x{mask.shape[0]}; expected "
                            f"{shape[1]}x{shape[0]} to match its image")
    return mask


def encode_png(array: np.ndarray) -> bytes:
    """Encode an ``HxW`` bool/uint8 or ``HxWx3`` uint8 array as PNG bytes (for downloads)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
