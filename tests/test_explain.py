"""Grad-CAM and test-time augmentation on real slices with the shipped weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg import explain
from brainseg.data import index_dataset
from brainseg.inference import Predictor
from brainseg.io import read_mask, read_slice

PATIENT = "TCGA_FG_6689_20020326"   # validation patient; slice 30 holds a large tumour (4,930 px)
TUMOUR_SLICE = 30


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def fp32_predictor() -> Predictor:
    return Predictor(precision="fp32")


@pytest.fixture(scope="module")
def tumour_slice(kaggle_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    stem = kaggle_dir / PATIENT / f"{PATIENT}_{TUMOUR_SLICE}"
    image = read_slice(stem.with_suffix(".tif"))
    return image, read_mask(Path(f"{stem}_mask.tif"), shape=image.shape[:2])


def test_grad_cam_has_image_size_and_structure(predictor, tumour_slice):
    image, _ = tumour_slice
    heat = explain.grad_cam(predictor, [image])[0]
    assert heat.shape == image.shape[:2]
    assert heat.dtype == np.float32
    assert 0.0 <= heat.min() < heat.max() <= 1.0 + 1e-6


@pytest.mark.xfail(strict=True, reason="known gap: with the shipped classifier the layer4 Grad-CAM peak lands inside "
                   "the tumour on 8.3% of test tumour slices (chance 6.4%, weights/explain.json), and not on this one")
def test_grad_cam_peaks_inside_a_large_tumour(predictor, tumour_slice):
    image, truth = tumour_slice
    heat = explain.grad_cam(predictor, [image])[0]
    assert explain.peak_in_tumour(heat, truth)


def test_grad_cam_leaves_the_classifier_unchanged(predictor, tumour_slice):
    image, _ = tumour_slice
    before = predictor.predict(image)
    explain.grad_cam(predictor, [image])
    after = predictor.predict(image)
    assert before.tumour_probability == after.tumour_probability
    assert all(p.grad is None for p in predictor.classifier.parameters())


def test_cam_overlay_is_an_rgb_image(predictor, tumour_slice):
    image, _ = tumour_slice
    overlay = explain.cam_overlay(image, explain.grad_cam(predictor, [image])[0])
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, image)


def test_augmentation_undo_inverts_apply():
    batch = torch.rand(2, 3, 32, 32)
    for member in explain.with_shifts(explain.FLIPS, pixels=3):
        assert torch.equal(member.undo(member.apply(batch)), batch)
        if member != explain.Augmentation():
            assert not torch.equal(member.apply(batch), batch)


def test_tta_with_identity_alone_equals_the_plain_prediction(predictor, tumour_slice):
    image, _ = tumour_slice
    plain = predictor.predict(image)
    tta = explain.tta_predict_many(predictor, [image], explain.IDENTITY)[0]
    assert tta.members.shape == (1, *image.shape[:2])
    np.testing.assert_array_equal(tta.probability, plain.probability)
    assert tta.tumour_probability == plain.tumour_probability
    assert not tta.spread.any() and not tta.disagreement(0.5).any()


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_tta_commutes_with_flipping_the_slice(fp32_predictor, tumour_slice, axis):
    image, _ = tumour_slice
    tta = explain.tta_predict_many(fp32_predictor, [image])[0]
    flipped = explain.tta_predict_many(fp32_predictor, [np.flip(image, axis).copy()])[0]
    # fp32 convolutions of a flipped input are equal only up to rounding (measured: up to 1.1e-4 on a few pixels)
    np.testing.assert_allclose(flipped.probability, np.flip(tta.probability, axis), atol=5e-4)
    np.testing.assert_allclose(flipped.spread, np.flip(tta.spread, axis), atol=5e-4)


def test_flip_tta_maps_describe_member_disagreement(predictor, tumour_slice):
    image, truth = tumour_slice
    tta = explain.tta_predict_many(predictor, [image])[0]
    assert tta.members.shape == (len(explain.FLIPS), *image.shape[:2])
    disagreement = tta.disagreement(0.5)
    assert disagreement.min() >= 0 and disagreement.max() <= 0.5
    assert tta.spread.max() > 0                      # the flips do not agree everywhere ...
    background = ~np.pad(truth, 20)[20:-20, 20:-20] & (image.mean(axis=2) <= 10)
    assert np.median(tta.spread[background]) < 0.01  # ... but do on empty background
    mask = tta.prediction().mask(0.5, gate=0.0)
    assert mask.shape == truth.shape and (mask & truth).any()


def test_gradcam_hit_rate_counts_tumour_slices(predictor, kaggle_dir):
    records = [r for r in index_dataset(kaggle_dir, patients=[PATIENT]) if r.tumour][8:12]
    result = explain.gradcam_hit_rate(records, predictor, gate=0.5, batch_size=2)
    assert result["tumour_slices"] == 4 and result["patients"] == 1
    assert 0.0 <= result["hit_rate"] <= 1.0 and 0.0 < result["chance"] < 1.0


def test_compare_tta_reports_both_with_timings(predictor, kaggle_dir):
    records = index_dataset(kaggle_dir, patients=[PATIENT])[26:32]
    settings = {"seg_threshold": 0.5, "gate": 0.5, "min_area": 0}
    result = explain.compare_tta(records, predictor, explain.FLIPS, settings, batch_size=4)
    for name in ("plain", "tta"):
        assert result[name]["seconds_per_slice"] > 0
        assert 0.0 <= result[name]["segmenter_tumour_tversky_pooled"] <= 1.0
        assert set(result[name]["per_patient_volume_dice"]) == {PATIENT}
    identity = explain.compare_tta(records, predictor, explain.IDENTITY, settings, batch_size=4)
    assert identity["tta"]["segmenter_volume_dice_mean"] == identity["plain"]["segmenter_volume_dice_mean"]
