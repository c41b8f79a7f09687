"""The patient view: summary, 3D figure, area profile, CSV and HTML report, from real predictions."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from brainseg import metrics
from brainseg.data.index import index_dataset
from brainseg.figures import report
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import read_mask, read_slice

PATIENT = "TCGA_FG_6689_20020326"   # validation patient with tumour on about 20 of 48 slices


@pytest.fixture(scope="module")
def patient(kaggle_dir):
    """Slice numbers, images, predicted and true masks of one real patient."""
    records = index_dataset(kaggle_dir, patients=[PATIENT])
    images = [read_slice(r.image_path) for r in records]
    truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(records, images)]
    predicted = [p.mask(0.5, gate=0.5) for p in Predictor().predict_many(images)]
    return [r.number for r in records], images, predicted, truths


@pytest.fixture(scope="module")
def summary(patient):
    numbers, _, predicted, truths = patient
    return report.patient_summary(PATIENT, numbers, predicted, truths)


def test_summary_matches_the_masks(patient, summary):
    numbers, _, predicted, truths = patient
    assert summary.slice_numbers == numbers == sorted(numbers)
    assert summary.predicted_px == [int(m.sum()) for m in predicted]
    assert summary.true_px == [int(t.sum()) for t in truths]
    assert summary.predicted_tumour == [bool(m.any()) for m in predicted]
    assert summary.volume_dice == metrics.dice(metrics.counts(np.stack(predicted), np.stack(truths)))


def test_summary_refuses_mismatched_lists(patient):
    numbers, _, predicted, truths = patient
    with pytest.raises(ValueError, match=PATIENT):
        report.patient_summary(PATIENT, numbers, predicted[:-1], truths)


def test_3d_voxel_count_equals_sum_of_predicted_areas(patient, summary):
    numbers, _, predicted, truths = patient
    current = report.key_slices(summary, 1)[0]
    figure = report.volume_figure(predicted, truths, current, numbers)
    assert figure.layout.meta["predicted_voxels"] == sum(summary.predicted_px) > 0
    assert figure.layout.meta["true_voxels"] == sum(summary.true_px) > 0
    meshes = [t for t in figure.data if t.type == "mesh3d"]
    assert len(meshes) == 2 and all(len(m.i) > 100 for m in meshes)
    marker = next(t for t in figure.data if t.type == "scatter3d")
    assert set(marker.z) == {current * report.SLICE_SPACING}
    assert str(numbers[current]) in marker.name


def test_3d_view_of_an_empty_prediction_still_marks_the_slice(patient):
    numbers, _, predicted, truths = patient
    empty = [np.zeros_like(m) for m in predicted]
    figure = report.volume_figure(empty, truths, 0, numbers)
    assert figure.layout.meta["predicted_voxels"] == 0
    assert [t.type for t in figure.data] == ["mesh3d", "scatter3d"]


def test_key_slices_are_the_largest_tumours(summary):
    keys = report.key_slices(summary, 3)
    assert len(keys) == 3 and keys == sorted(keys)
    assert int(np.argmax(summary.predicted_px)) in keys and int(np.argmax(summary.true_px)) in keys


def test_csv_has_a_row_per_slice_and_the_volume(summary):
    rows = list(csv.DictReader(io.StringIO(report.summary_csv(summary).decode())))
    assert len(rows) == len(summary.slice_numbers) + 1
    assert [int(r["predicted_px"]) for r in rows[:-1]] == summary.predicted_px
    assert [int(r["true_px"]) for r in rows[:-1]] == summary.true_px
    assert [r["predicted_tumour"] == "True" for r in rows[:-1]] == summary.predicted_tumour
    assert rows[-1]["slice"] == "volume" and float(rows[-1]["dice"]) == round(summary.volume_dice, 4)
    assert int(rows[-1]["predicted_px"]) == sum(summary.predicted_px)


def test_html_report_holds_numbers_slices_figures_and_disclaimer(patient, summary):
    numbers, images, predicted, truths = patient
    keys = report.key_slices(summary, 3)
    figures = [
        report.volume_figure(predicted, truths, keys[0], numbers),
        report.volume_figure(predicted, truths, keys[1], numbers),
    ]
    page = report.html_report(summary, {i: images[i] for i in keys}, figures, {"seg_threshold": 0.5}, plotly_js="cdn")
    assert "not a medical device" in page
    assert PATIENT in page and f"{summary.volume_dice:.4f}" in page
    assert page.count("data:image/png;base64,") == len(keys)
    assert page.count('class="plotly-graph-div"') == 2
    assert all(f"slice {numbers[i]}:" in page for i in keys)
    assert page.count("<tr>") >= len(numbers)
