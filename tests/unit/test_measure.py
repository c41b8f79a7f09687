"""Tumour measurements on synthetic volumes of known size and side: mL from an anisotropic spacing, extents in mm,
the hemisphere against the head's midline, and what the CSV and the HTML report say of them."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from brainseg import measure
from brainseg.figures import report

SPACING = (3.0, 0.9, 0.8)    # mm between slices, rows, columns
RADIUS_MM = 20.0


def ball(shape: tuple[int, int, int], spacing: tuple[float, float, float], centre_mm: tuple[float, float, float],
         radius_mm: float) -> np.ndarray:
    """``DxHxW bool``: the voxels whose centres lie within ``radius_mm`` of ``centre_mm``."""
    axes = [np.arange(n)[:, None, None] * s for n, s in zip(shape, spacing)]
    axes = [axes[0], axes[1].reshape(1, -1, 1), axes[2].reshape(1, 1, -1)]
    return sum((a - c) ** 2 for a, c in zip(axes, centre_mm)) <= radius_mm ** 2


def head(shape: tuple[int, int, int], first: int, last: int) -> list[np.ndarray]:
    """``HxWx3 uint8`` slices of a bright block spanning columns ``first..last`` (the head) on a dark background,
    with a few stray bright pixels near the edges that must not move the midline."""
    images = np.full((*shape, 3), 5, np.uint8)
    images[:, 40:200, first:last + 1] = 120
    images[3, 0, [0, shape[2] - 1]] = 255
    return list(images)


def test_a_sphere_in_anisotropic_voxels_has_its_volume_in_ml_and_its_extent_in_mm() -> None:
    shape = (30, 120, 130)
    mask = ball(shape, SPACING, (44.3, 53.1, 51.7), RADIUS_MM)
    found = measure.measure(mask, list(range(1, shape[0] + 1)), SPACING, None)
    exact = 4 / 3 * np.pi * RADIUS_MM ** 3 / 1000.0      # 33.5 mL
    assert found.voxels == int(mask.sum())
    assert found.volume_ml == pytest.approx(exact, rel=0.02)
    assert found.volume_text() == f"{found.volume_ml:.1f} mL"
    for extent, step in zip(found.extent_mm, SPACING):       # the diameter, to within one voxel
        assert abs(extent - 2 * RADIUS_MM) <= step
    slices, rows, columns = found.extent_mm
    assert found.extent_text() == f"{columns:.0f} x {rows:.0f} x {slices:.0f} mm"
    areas = mask.sum(axis=(1, 2))
    assert found.largest_slice == int(areas.argmax()) + 1 and found.largest_px == int(areas.max())


def test_without_a_spacing_sizes_stay_in_voxels() -> None:
    mask = np.zeros((5, 40, 40), bool)
    mask[1:4, 10:20, 5:35] = True
    found = measure.measure(mask, [11, 12, 13, 14, 15], None, None)
    assert found.volume_ml is None and found.extent_mm is None
    assert found.volume_text() == "900 voxels"
    assert found.extent_voxels == (3, 10, 30) and found.extent_text() == "30 x 10 x 3 voxels"
    assert found.largest_slice == 12


@pytest.mark.parametrize(("columns", "side"), [((150, 170), "left"), ((85, 105), "right"), ((100, 140), "both"),
                                               ((124, 134), "left")])
def test_the_hemisphere_is_decided_against_the_head_midline(columns: tuple[int, int], side: str) -> None:
    """The head spans columns 60-180, so its midline is column 120, not the slice's centre (127.5); display
    columns run toward the patient's left. A tumour over columns 124-134 lies left of the head's midline although
    it straddles the slice's centre."""
    shape = (8, 256, 256)
    images = head(shape, 60, 180)
    midline = measure.head_midline(images)
    assert midline == 120.0
    mask = np.zeros(shape, bool)
    mask[2:6, 100:130, columns[0]:columns[1] + 1] = True
    assert measure.measure(mask, list(range(1, 9)), SPACING, midline).hemisphere == side
    assert measure.measure(np.zeros(shape, bool), list(range(1, 9)), SPACING, midline).hemisphere == "none"


def test_a_volume_without_head_voxels_has_no_midline() -> None:
    assert measure.head_midline([np.zeros((64, 64, 3), np.uint8)] * 3) is None


def summary_of(spacing: tuple[float, float, float] | None, has_truth: bool) -> report.PatientSummary:
    shape = (6, 64, 64)
    predicted = np.zeros(shape, bool)
    predicted[2:4, 10:20, 40:50] = True           # 200 voxels, left of the centre
    truths = np.zeros(shape, bool)
    if has_truth:
        truths[2:5, 10:20, 40:50] = True          # 300 voxels
    numbers = list(range(1, 7))
    found = measure.measure(predicted, numbers, spacing, None)
    true = measure.measure(truths, numbers, spacing, None) if has_truth else None
    return report.patient_summary("P", numbers, list(predicted), list(truths), has_truth, found, true)


def volume_row(summary: report.PatientSummary) -> dict[str, str]:
    rows = list(csv.DictReader(io.StringIO(report.summary_csv(summary).decode())))
    assert all(r[c] == "" for r in rows[:-1] for c in report.VOLUME_COLUMNS)   # slice rows leave them blank
    assert rows[-1]["slice"] == "volume"
    return rows[-1]


def test_the_csv_volume_row_carries_the_measurements() -> None:
    row = volume_row(summary_of(SPACING, has_truth=True))
    assert float(row["predicted_volume_ml"]) == pytest.approx(200 * 3.0 * 0.9 * 0.8 / 1000, abs=1e-3)
    assert float(row["true_volume_ml"]) == pytest.approx(300 * 3.0 * 0.9 * 0.8 / 1000, abs=1e-3)
    assert (float(row["extent_lr"]), float(row["extent_ap"]), float(row["extent_si"])) == (8.0, 9.0, 6.0)
    assert (row["extent_unit"], row["hemisphere"], row["largest_slice"], row["spacing_mm"]) == \
        ("mm", "left", "3", "3.00 x 0.90 x 0.80")
    unknown = volume_row(summary_of(None, has_truth=False))
    assert (unknown["predicted_volume_ml"], unknown["true_volume_ml"], unknown["spacing_mm"]) == ("", "", "unknown")
    assert (unknown["extent_lr"], unknown["extent_unit"], unknown["true_px"]) == ("10", "voxels", "")


def test_the_report_states_the_measurements_and_nothing_true_without_a_mask() -> None:
    page = report.html_report(summary_of(SPACING, has_truth=True), {}, plotly_js=False)
    assert "<td>0.4 mL</td>" in page and "<td>0.6 mL</td>" in page and "8 x 9 x 6 mm" in page
    assert "hemisphere of the predicted tumour</th><td>left" in page
    bare = summary_of(None, has_truth=False)
    page = report.html_report(bare, {2: np.zeros((64, 64, 3), np.uint8)}, plotly_js=False)
    assert "200 voxels (spacing unknown)" in page and "10 x 10 x 2 voxels" in page
    assert "true tumour" not in page and "Dice (all slices" not in page and ", true " not in page
    figure = report.volume_figure(list(np.zeros((6, 64, 64), bool)), None, 2)
    assert figure.layout.meta["true_voxels"] is None and "true" not in figure.layout.title.text
    assert not any("true" in (trace.name or "") for trace in figure.data)
