"""Tumour measurements of a mask volume in display order (slice, row, column running toward S, P, L): volume in mL,
extent along each axis, hemisphere and the slice of largest area. Pure: arrays and the voxel spacing in, numbers
out; without a spacing (Kaggle folders and multi-page TIFFs store none) sizes stay in voxels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FLAIR_CHANNEL = 1        # the head is found on FLAIR (a single-sequence volume is FLAIR in every channel)
HEAD_LEVEL = 20          # 8-bit FLAIR above this is head, not background
HEAD_COLUMN_SHARE = 0.02  # a column is inside the head when it holds this share of the busiest column's head voxels
SIDE_SHARE = 0.9         # a tumour is on one side when at least this share of its voxels lies there
HEMISPHERES = ("left", "right", "both", "none")


@dataclass(frozen=True)
class Measurements:
    """One mask volume measured: its size, where it lies and its largest slice."""

    voxels: int
    spacing: tuple[float, float, float] | None   # mm between slices, rows and columns; None: unknown
    extent_voxels: tuple[int, int, int]          # bounding box along slices (S-I), rows (A-P), columns (R-L)
    hemisphere: str                              # one of HEMISPHERES
    largest_slice: int | None                    # number of the slice with the largest area; None without tumour
    largest_px: int

    @property
    def volume_ml(self) -> float | None:
        """Voxels times the voxel's volume (mm³), in mL (1 mL = 1,000 mm³); None when the spacing is unknown."""
        return None if self.spacing is None else self.voxels * float(np.prod(self.spacing)) / 1000.0

    @property
    def extent_mm(self) -> tuple[float, float, float] | None:
        """The bounding box in mm along (S-I, A-P, R-L); None when the spacing is unknown."""
        if self.spacing is None:
            return None
        return tuple(n * s for n, s in zip(self.extent_voxels, self.spacing))  # type: ignore[return-value]

    def volume_text(self) -> str:
        """``"12.3 mL"``, or ``"1,234 voxels"`` when the spacing is unknown."""
        return f"{self.volume_ml:.1f} mL" if self.volume_ml is not None else f"{self.voxels:,} voxels"

    def extent_text(self) -> str:
        """Extent as ``L-R x A-P x S-I``: ``"42 x 30 x 27 mm"``, or in voxels when the spacing is unknown."""
        slices, rows, columns = self.extent_mm or self.extent_voxels
        unit = "mm" if self.spacing is not None else "voxels"
        return f"{columns:.0f} x {rows:.0f} x {slices:.0f} {unit}"


def head_midline(images_u8: Sequence[np.ndarray]) -> float | None:
    """The column of the head's L-R midline: the centre of the head's bounding box along the columns, over the whole
    volume. Head voxels are those with FLAIR above ``HEAD_LEVEL``; columns holding fewer than ``HEAD_COLUMN_SHARE`` of
    the busiest column's head voxels are left out, so stray bright background pixels do not widen the box.

    Args:
        images_u8: the volume's ``HxWx3 uint8`` slices in display order (or a ``DxHxWx3`` array).

    Returns:
        The midline as a (fractional) column index, or None when no voxel is above the level.
    """
    counts = sum(np.count_nonzero(image[..., FLAIR_CHANNEL] > HEAD_LEVEL, axis=0) for image in images_u8)
    counts = np.asarray(counts)
    if counts.ndim == 0 or not counts.any():
        return None
    columns = np.flatnonzero(counts >= HEAD_COLUMN_SHARE * counts.max())
    return (columns[0] + columns[-1]) / 2.0


def hemisphere(column_voxels: np.ndarray, midline: float) -> str:
    """``"left"``/``"right"`` when at least ``SIDE_SHARE`` of the tumour voxels off the midline lie on that side,
    ``"both"`` otherwise, ``"none"`` without tumour. Display columns run toward the patient's left, so columns past
    the midline are left.

    Args:
        column_voxels: tumour voxels per display column (length W).
        midline: the head's midline column (:func:`head_midline`).

    Returns:
        One of ``HEMISPHERES``.
    """
    columns = np.arange(len(column_voxels))
    left, right = int(column_voxels[columns > midline].sum()), int(column_voxels[columns < midline].sum())
    if not column_voxels.any():
        return "none"
    if left + right and left >= SIDE_SHARE * (left + right):
        return "left"
    if left + right and right >= SIDE_SHARE * (left + right):
        return "right"
    return "both"


def _extent(projection: np.ndarray) -> int:
    found = np.flatnonzero(projection)
    return int(found[-1] - found[0] + 1) if found.size else 0


def measure(masks: Sequence[np.ndarray], slice_numbers: Sequence[int], spacing: Sequence[float] | None,
            midline: float | None) -> Measurements:
    """Measure one tumour mask volume.

    Args:
        masks: ``HxW bool`` masks in display order (slice 1 most inferior, rows toward P, columns toward L), or a
            ``DxHxW`` array.
        slice_numbers: the slices' numbers, in order.
        spacing: mm between slices, rows and columns (:meth:`Geometry.display_spacing`); None when unknown.
        midline: the head's midline column (:func:`head_midline`); None: the centre of the slice.

    Returns:
        The measurements; extents and volume in voxels only when ``spacing`` is None.
    """
    areas = [int(np.count_nonzero(m)) for m in masks]
    if len(areas) != len(slice_numbers):
        raise ValueError(f"{len(areas)} masks and {len(slice_numbers)} slice numbers; expected one number a mask")
    width = np.shape(masks[0])[1]
    by_row = sum(np.count_nonzero(m, axis=1) for m in masks)      # tumour voxels per row, over all slices
    by_column = sum(np.count_nonzero(m, axis=0) for m in masks)   # per column
    largest = int(np.argmax(areas)) if areas and max(areas) else None
    return Measurements(
        voxels=sum(areas),
        spacing=None if spacing is None else tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        extent_voxels=(_extent(np.asarray(areas)), _extent(np.asarray(by_row)), _extent(np.asarray(by_column))),
        hemisphere=hemisphere(np.asarray(by_column), (width - 1) / 2.0 if midline is None else midline),
        largest_slice=None if largest is None else int(slice_numbers[largest]),
        largest_px=areas[largest] if largest is not None else 0,
    )
