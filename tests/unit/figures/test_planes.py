"""The three linked planes on a real test-split patient (bundled in ``samples/``) stored as an anisotropic NIfTI and
read back by :func:`brainseg.io.volumes.read_volume`: physical shape, and a crosshair voxel found in every plane."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainseg.data.index import index_patient, load_split
from brainseg.figures import charts, planes
from brainseg.io import volumes
from brainseg.io.slices import read_mask, read_slice
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR

PATIENT = "TCGA_HT_7686_19950629"    # 20 slices of 256x256, tumour on 10
SPACING = (1.0, 1.0, 3.0)            # stored x, y, z in mm: 3 mm slices
MARKER = np.array([7, 251, 13], np.uint8)   # a colour no voxel of the patient has
VOXEL = (12, 70, 200)                # display (slice, row, column) of the marked voxel, off the tumour


@pytest.fixture(scope="module")
def scan() -> tuple[volumes.Volume, list[np.ndarray]]:
    """The patient with one voxel painted ``MARKER``, stored RAS+ (x toward R, y toward A, z toward S) at 1x1x3 mm,
    read back as the app reads an upload; and the patient's true masks in display order."""
    assert PATIENT in load_split(WEIGHTS_DIR / "split.json")["test"]
    records = index_patient(SAMPLES_DIR / PATIENT)
    display = np.stack([read_slice(r.image_path) for r in records])          # slice, row (A->P), column (R->L)
    truths = [read_mask(r.mask_path, shape=display.shape[1:3]) for r in records]
    assert not (display == MARKER).all(axis=-1).any()
    display[VOXEL] = MARKER
    stored = np.ascontiguousarray(display[:, ::-1, ::-1].transpose(2, 1, 0, 3))   # x = R->L reversed, y = A
    nifti = nib.Nifti1Image(stored, np.diag([*SPACING, 1.0])).to_bytes()
    return volumes.read_volume([("patient.nii", nifti)]), truths


def marked(picture: np.ndarray) -> np.ndarray:
    return (picture == MARKER).all(axis=-1)


def test_the_reader_gives_the_display_order_and_spacing(scan) -> None:
    volume, truths = scan
    assert volume.geometry.orientation == "RAS" and volume.geometry.display_spacing() == (3.0, 1.0, 1.0)
    assert volume.geometry.spacing_known
    found = np.argwhere(np.stack([marked(image) for image in volume.images_u8]))
    assert [tuple(v) for v in found] == [VOXEL]


def test_coronal_and_sagittal_planes_have_the_physical_shape(scan) -> None:
    volume, truths = scan
    depth, (height, width) = len(volume.images_u8), volume.images_u8[0].shape[:2]
    drawn = planes.three_planes(volume.images_u8, truths, None, VOXEL, volume.geometry.display_spacing())
    assert [p.name for p in drawn] == list(planes.PLANES)
    # 20 slices of 3 mm against 256 rows/columns of 1 mm: the side views are 60 x 256 pixels of 1 mm
    assert [p.image_u8.shape[:2] for p in drawn] == [(height, width), (3 * depth, width), (3 * depth, height)]
    unit = planes.three_planes(volume.images_u8, truths, None, VOXEL)     # spacing unknown: a pixel a voxel
    assert [p.image_u8.shape[:2] for p in unit] == [(height, width), (depth, width), (depth, height)]


def test_a_crosshair_voxel_lands_on_the_same_voxel_in_all_three_planes(scan) -> None:
    volume, truths = scan
    depth = len(volume.images_u8)
    drawn = planes.three_planes(volume.images_u8, truths, truths, VOXEL, volume.geometry.display_spacing(),
                                view="composite")
    z, y, x = VOXEL
    assert [p.point for p in drawn] == [(y, x), (3 * (depth - 1 - z) + 1, x), (3 * (depth - 1 - z) + 1, y)]
    for plane, block in zip(drawn, [(1, 1), (3, 1), (3, 1)]):   # one 3 mm slice is three 1 mm rows tall
        rows, columns = np.nonzero(marked(plane.image_u8))
        assert rows.size == block[0] * block[1], plane.name
        assert rows.min() <= plane.point[0] <= rows.max() and columns.min() <= plane.point[1] <= columns.max()
        # the crosshair's lines cross at the voxel and leave it open
        row, column = plane.point
        colour = np.array(planes.CROSSHAIR_COLOUR, np.uint8)
        assert (plane.image_u8[row, [0, -1]] == colour).all() and (plane.image_u8[[0, -1], column] == colour).all()


def test_side_planes_are_the_overlaid_rows_stretched_superior_up(scan) -> None:
    """Away from the crosshair's lines, the coronal plane is the overlay of row ``y`` of every slice, each slice
    three pixels tall, the last slice at the top; the prediction and the truth keep the overlay's colours."""
    volume, truths = scan
    predicted = [np.roll(t, 4, axis=1) for t in truths]      # a shifted copy: true and false positives, false negatives
    z, x = 9, 20
    y = int(np.stack(truths).sum(axis=(0, 2)).argmax())      # the row through the most tumour
    coronal = planes.three_planes(volume.images_u8, predicted, truths, (z, y, x), (3.0, 1.0, 1.0))[1]
    row_predicted, row_true = np.stack([m[y] for m in predicted]), np.stack([t[y] for t in truths])
    assert (row_predicted & row_true).any() and (row_predicted & ~row_true).any() and (~row_predicted & row_true).any()
    section = charts.overlay(charts.display_image(np.stack([image[y] for image in volume.images_u8]), "flair"),
                             row_predicted, row_true)
    expected = np.repeat(section[::-1], 3, axis=0)
    lines = np.zeros(expected.shape[:2], bool)
    lines[coronal.point[0], :] = lines[:, coronal.point[1]] = True
    assert (coronal.image_u8[~lines] == expected[~lines]).all()


def test_a_crosshair_outside_the_volume_is_refused(scan) -> None:
    volume, truths = scan
    with pytest.raises(ValueError, match="outside"):
        planes.three_planes(volume.images_u8, truths, None, (len(truths), 0, 0))


def test_the_default_crosshair_is_the_tumour_centroid() -> None:
    mask = np.zeros((100, 120), bool)
    mask[10:21, 60:81] = True
    assert planes.default_crosshair(mask) == (15, 70)
    assert planes.default_crosshair(np.zeros((100, 120), bool)) == (50, 60)
