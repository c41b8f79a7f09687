"""The volume in three planes through one crosshair (axial, coronal, sagittal), each drawn at its voxels' physical
shape. Pure: display-order slices (slice, row, column running toward S, P, L) in, ``hxwx3 uint8`` pictures out.
Superior is up in the coronal and sagittal planes, the patient's left on the picture's right in the axial and coronal
planes (the radiological view of the slices), anterior on the left in the sagittal plane.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainseg.figures.charts import display_image, overlay

PLANES = ("axial", "coronal", "sagittal")
CROSSHAIR_COLOUR = (255, 235, 59)
MAX_SIDE = 512   # pixels: the longest side of a plane picture (larger volumes are drawn coarser)
GAP_PX = 2       # pixels left clear around the crosshair voxel's own block, so that the voxel itself shows


@dataclass(frozen=True)
class Plane:
    """One plane through the crosshair, resampled to the voxels' physical shape."""

    name: str                 # "axial", "coronal" or "sagittal"
    image_u8: np.ndarray      # hxwx3 uint8: the image with the prediction (and truth) overlaid, crosshair drawn
    point: tuple[int, int]    # (row, column) of the crosshair voxel in ``image_u8``
    mm_per_px: float          # the picture's pixel size (voxel units when the spacing is unknown)


def plane_scale(shape: Sequence[int], spacing: Sequence[float], max_side: int = MAX_SIDE) -> float:
    """The pixel size shared by the three pictures: the finest voxel spacing, coarser where the longest side of the
    volume would otherwise pass ``max_side`` pixels.

    Args:
        shape: the volume's (slices, rows, columns).
        spacing: mm between slices, rows and columns.
        max_side: the longest picture side allowed, in pixels.

    Returns:
        mm a picture pixel.
    """
    longest = max(n * s for n, s in zip(shape, spacing))
    return max(min(spacing), longest / max_side)


def default_crosshair(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) for a new view of a slice: the centroid of its ``HxW bool`` mask, the slice's centre without
    one."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return mask.shape[0] // 2, mask.shape[1] // 2
    return int(round(rows.mean())), int(round(columns.mean()))


def _sources(count: int, size: int) -> np.ndarray:
    """For each of ``size`` picture pixels along an axis of ``count`` voxels, the voxel it shows (nearest)."""
    return np.minimum(((np.arange(size) + 0.5) * count / size).astype(np.int64), count - 1)


def _resampled(image_u8: np.ndarray, spacing: tuple[float, float], mm_per_px: float, point: tuple[int, int]
               ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The picture at ``mm_per_px`` (nearest voxel, so a thick slice shows as a band), where the voxel ``point`` lands
    and half the size of its block in picture pixels (rows, columns)."""
    sizes = [max(1, round(n * s / mm_per_px)) for n, s in zip(image_u8.shape[:2], spacing)]
    rows, columns = (_sources(n, size) for n, size in zip(image_u8.shape[:2], sizes))
    picture = image_u8[rows[:, None], columns[None, :]]
    landed = tuple(int((p + 0.5) * size / n) for p, n, size in zip(point, image_u8.shape[:2], sizes))
    half = tuple(math.ceil(size / n / 2) for n, size in zip(image_u8.shape[:2], sizes))
    return picture, landed, half   # type: ignore[return-value]


def _crosshair(picture: np.ndarray, point: tuple[int, int], half: tuple[int, int]) -> np.ndarray:
    """Lines through ``point`` across the picture, left open over the voxel's block and ``GAP_PX`` around it."""
    row, column = point
    height, width = picture.shape[:2]
    picture[row, np.abs(np.arange(width) - column) > half[1] + GAP_PX] = CROSSHAIR_COLOUR
    picture[np.abs(np.arange(height) - row) > half[0] + GAP_PX, column] = CROSSHAIR_COLOUR
    return picture


def three_planes(images_u8: Sequence[np.ndarray], masks: Sequence[np.ndarray], truths: Sequence[np.ndarray] | None,
                 crosshair: tuple[int, int, int], spacing: Sequence[float] | None = None, view: str = "flair"
                 ) -> list[Plane]:
    """Axial, coronal and sagittal planes through the crosshair voxel, with the prediction (and the truth, as
    true/false positives and false negatives) overlaid, all at one pixel size so that they share a scale.

    Args:
        images_u8: the volume's ``HxWx3 uint8`` slices in display order (or a ``DxHxWx3`` array).
        masks: the predicted ``HxW bool`` mask of each slice.
        truths: the true ``HxW bool`` mask of each slice, or None without a mask.
        crosshair: the voxel (slice, row, column), 0-based, that the planes pass through.
        spacing: mm between slices, rows and columns; None (unknown): one unit a voxel.
        view: ``"flair"`` or ``"composite"`` (:func:`brainseg.figures.charts.display_image`).

    Returns:
        The three planes, in ``PLANES`` order.
    """
    depth, (height, width) = len(images_u8), images_u8[0].shape[:2]
    z, y, x = crosshair
    if not (0 <= z < depth and 0 <= y < height and 0 <= x < width):
        raise ValueError(f"crosshair {crosshair} is outside the {depth}x{height}x{width} volume")
    slice_mm, row_mm, column_mm = (1.0, 1.0, 1.0) if spacing is None else (float(s) for s in spacing)
    mm_per_px = plane_scale((depth, height, width), (slice_mm, row_mm, column_mm))

    def cut(volume: Sequence[np.ndarray], plane: str) -> np.ndarray:
        if plane == "axial":
            return np.asarray(volume[z])
        if plane == "coronal":
            return np.stack([part[y] for part in volume])[::-1]        # superior up
        return np.stack([part[:, x] for part in volume])[::-1]

    geometry = {"axial": ((row_mm, column_mm), (y, x)), "coronal": ((slice_mm, column_mm), (depth - 1 - z, x)),
                "sagittal": ((slice_mm, row_mm), (depth - 1 - z, y))}
    planes = []
    for name in PLANES:
        shown = overlay(display_image(cut(images_u8, name), view), cut(masks, name).astype(bool),
                        None if truths is None else cut(truths, name).astype(bool))
        plane_spacing, point = geometry[name]
        picture, landed, half = _resampled(shown, plane_spacing, mm_per_px, point)
        planes.append(Plane(name, _crosshair(picture, landed, half), landed, mm_per_px))
    return planes
