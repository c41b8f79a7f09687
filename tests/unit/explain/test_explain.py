"""Heat maps (LayerCAM, Grad-CAM) and test-time augmentation on real slices with the shipped weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg import explain
from brainseg.data.index import index_dataset
from brainseg.evaluation import heatmaps
from brainseg.figures import charts
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import read_mask, read_slice
from brainseg.paths import SAMPLES_DIR

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


@pytest.mark.parametrize("method", explain.CAM_METHODS)
def test_heat_map_has_image_size_and_structure(predictor, tumour_slice, method):
    image, _ = tumour_slice
    heat = explain.activation_maps(predictor, [image], method)[0]
    assert heat.shape == image.shape[:2]
    assert heat.dtype == np.float32
    assert 0.0 <= heat.min() < heat.max() <= 1.0 + 1e-6


def test_heat_map_follows_an_odd_sized_image(predictor, tumour_slice):
    image, _ = tumour_slice
    wide = np.ascontiguousarray(np.pad(image, ((0, 0), (40, 0), (0, 0))))
    assert explain.activation_maps(predictor, [wide])[0].shape == wide.shape[:2]


def test_heat_map_peaks_inside_a_large_tumour(predictor, tumour_slice):
    image, truth = tumour_slice
    heat = explain.activation_maps(predictor, [image])[0]
    assert heatmaps.peak_in_tumour(heat, truth)


def test_heat_map_peaks_inside_the_tumour_on_most_tumour_slices_of_the_sample_patients(predictor):
    """Every tumour slice of the test split's bundled patients (never used to choose the map): the peak must
    land inside the tumour on at least 40% of them, where a random brain pixel does about 6% of the time
    (Grad-CAM at layer4 scores 0 of 34 here). The 192-px classifier scores 19 of 34; the rate over every test
    tumour slice is in the model card (weights/explain.json). This replaced a check on each patient's single
    largest slice, which the 192-px classifier hit on 1 of 4 while its test-split rate rose from 0.65 to 0.78."""
    records = [r for r in index_dataset(SAMPLES_DIR) if r.tumour]
    images = [read_slice(r.image_path) for r in records]
    heat_maps = explain.activation_maps(predictor, images)
    hits = [heatmaps.peak_in_tumour(heat, read_mask(r.mask_path, shape=image.shape[:2]))
            for r, image, heat in zip(records, images, heat_maps)]
    assert len(hits) >= 30 and sum(hits) >= 0.4 * len(hits), f"{sum(hits)} of {len(hits)}"


@pytest.mark.parametrize(("method", "layer"), [("layercam", "layer1"), ("gradcam", "layer4"), ("layercam", "layer3")])
def test_heat_map_equals_the_grad_cam_package(predictor, tumour_slice, method, layer):
    """The hand-written maps against ``pytorch_grad_cam`` (a dev dependency) on the same private tap."""
    cam_package = pytest.importorskip("pytorch_grad_cam")
    image, _ = tumour_slice
    backbone, depth = predictor.classifier.backbone, explain.STAGES.index(layer) + 1

    class TapView(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = predictor.classifier    # the package reads its device from the parameters
            self.tap = torch.nn.Identity()

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), predictor.autocast():
                x = backbone.maxpool(backbone.act1(backbone.bn1(backbone.conv1(predictor.classifier.resize(batch)))))
                for stage in explain.STAGES[:depth]:
                    x = getattr(backbone, stage)(x)
            x = self.tap(x.float().requires_grad_())
            with predictor.autocast():
                for stage in explain.STAGES[depth:]:
                    x = getattr(backbone, stage)(x)
                return predictor.classifier.head(x.float()).float()

    view = TapView()
    package_class = {"layercam": cam_package.LayerCAM, "gradcam": cam_package.GradCAM}[method]
    with package_class(model=view, target_layers=[view.tap]) as cam, torch.enable_grad():
        expected = cam(predictor.tensors([image]), targets=[lambda logits: logits[1] - logits[0]])[0]
    for parameter in predictor.classifier.parameters():
        parameter.grad = None
    ours = explain.activation_maps(predictor, [image], method, layer)[0]
    np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_unknown_map_is_refused(predictor, tumour_slice):
    with pytest.raises(ValueError, match="unknown map"):
        explain.activation_maps(predictor, [tumour_slice[0]], "scorecam")


def test_heat_map_leaves_the_classifier_unchanged(predictor, tumour_slice):
    image, _ = tumour_slice
    before = predictor.predict(image)
    explain.activation_maps(predictor, [image])
    after = predictor.predict(image)
    assert before.tumour_probability == after.tumour_probability
    assert all(p.grad is None for p in predictor.classifier.parameters())


def test_cam_overlay_is_an_rgb_image(predictor, tumour_slice):
    image, _ = tumour_slice
    overlay = charts.cam_overlay(image, explain.activation_maps(predictor, [image])[0])
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, image)


def test_jet_runs_blue_to_red():
    colours = charts.jet(np.array([0.0, 0.5, 1.0], np.float32))
    np.testing.assert_allclose(colours, [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])


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


def test_cam_hit_rates_count_tumour_slices(predictor, kaggle_dir):
    records = [r for r in index_dataset(kaggle_dir, patients=[PATIENT]) if r.tumour][8:12]
    result = heatmaps.cam_hit_rates(records, predictor, gate=0.5, maps=[("layercam", "layer1"), ("gradcam", "layer4")],
                                   batch_size=2)
    assert result["tumour_slices"] == 4 and result["patients"] == 1 and 0.0 < result["chance"] < 1.0
    assert set(result["maps"]) == {"layercam/layer1", "gradcam/layer4"}
    assert all(0.0 <= rates["hit_rate"] <= 1.0 for rates in result["maps"].values())


def test_compare_tta_reports_both_with_timings(predictor, kaggle_dir):
    records = index_dataset(kaggle_dir, patients=[PATIENT])[26:32]
    settings = {"seg_threshold": 0.5, "gate": 0.5, "min_area": 0}
    result = heatmaps.compare_tta(records, predictor, explain.FLIPS, settings, batch_size=4)
    for name in ("plain", "tta"):
        assert result[name]["seconds_per_slice"] > 0
        assert 0.0 <= result[name]["segmenter_tumour_tversky_pooled"] <= 1.0
        assert set(result[name]["per_patient_volume_dice"]) == {PATIENT}
    identity = heatmaps.compare_tta(records, predictor, explain.IDENTITY, settings, batch_size=4)
    assert identity["tta"]["segmenter_volume_dice_mean"] == identity["plain"]["segmenter_volume_dice_mean"]
