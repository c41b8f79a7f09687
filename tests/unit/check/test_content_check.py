"""The input check's content layer: negatives for calibration, and verdicts at 256x256 on real images."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from brainseg.check.assess import (
    OK,
    content_features,
    load_calibration,
    measure_brain,
    pixel_features,
    reslice_anisotropy,
)
from brainseg.data.index import by_patient, index_dataset
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import SUFFIXES, read_slice
from brainseg.preprocess import brain_pixels, resize_image
from brainseg.training import negatives

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    predictor = Predictor()
    assert predictor.input_check is not None and predictor.input_check.content is not None, \
        "weights/input_check.json has no content model: run python -m brainseg calibrate"
    return predictor


@pytest.fixture(scope="module")
def sample_records():
    return index_dataset(SAMPLES)


def test_reslices_are_sagittal_and_coronal_at_the_model_size(sample_records) -> None:
    rows = next(iter(by_patient(sample_records).values()))
    volume = np.stack([read_slice(r.image_path) for r in rows])
    views = list(negatives.reslices(volume, count=2))
    assert len(views) == 4 and all(v.shape == (256, 256, 3) and v.dtype == np.uint8 for v in views)
    assert all(not np.array_equal(v, volume[len(volume) // 2]) for v in views)


def test_reslice_anisotropy_sees_reformatted_views_in_any_orientation(sample_records) -> None:
    """Sagittal and coronal reslices of a sample volume are far smoother along the slice direction than any of
    its axial slices, turned or not (pure measure, no calibration needed)."""
    rows = next(iter(by_patient(sample_records).values()))
    volume = np.stack([read_slice(r.image_path) for r in rows])
    views = list(negatives.reslices(volume, count=2))
    axial = [image for image in volume if brain_pixels(image).mean() > 0.1]
    turned = [np.ascontiguousarray(np.rot90(image)) for image in views + axial]
    view_values = [reslice_anisotropy(measure_brain(image)) for image in views]
    axial_values = [reslice_anisotropy(measure_brain(image)) for image in axial]
    assert min(view_values) > 2 * max(axial_values), (view_values, max(axial_values))
    assert np.allclose([reslice_anisotropy(measure_brain(image)) for image in turned], view_values + axial_values)


def test_reslices_are_flagged_as_reformatted_views_and_axial_slices_are_not(predictor: Predictor,
                                                                             sample_records) -> None:
    threshold = predictor.input_check.reslice_threshold
    assert np.isfinite(threshold), "weights/input_check.json has no reslice threshold: run python -m brainseg calibrate"
    volumes = [np.stack([read_slice(r.image_path) for r in rows]) for rows in by_patient(sample_records).values()]
    views = [view for volume in volumes for view in negatives.reslices(volume)]
    checks = [p.check for p in predictor.predict_many(views)]
    assert all(any("reformatted" in reason for reason in c.reasons) for c in checks), [c.reasons for c in checks]
    axial = [read_slice(r.image_path) for r in sample_records]
    assert max(reslice_anisotropy(measure_brain(image)) for image in axial) < threshold


def test_derived_negatives_cover_views_sequences_and_channel_order(sample_records) -> None:
    made = negatives.derived(sample_records, per_patient=2)
    families = {family for family, _ in made}
    assert {negatives.VIEW, negatives.ORDER} <= families
    assert all(image.shape == (256, 256, 3) for _, image in made)


def test_packaged_negatives_decode_to_rgb_uint8() -> None:
    found = negatives.packaged()
    if not found:
        pytest.skip("no package-shipped medical images installed (pip install -r requirements-dev.txt)")
    assert all(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 for _, _, image in found)
    assert any("s1045" in source for _, source, _ in found)   # matplotlib: requirements-dev.txt
    photographs = [image for _, source, image in found if source in {f"scikit-image {n}" for n in
                   ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")}]
    assert len(photographs) == 5 and all(np.ptp(image.astype(int), axis=2).mean() > 5 for image in photographs)


def test_dipy_ships_a_coronal_t1_and_axial_b0_slices() -> None:
    if importlib.util.find_spec("dipy") is None:
        pytest.skip("dipy is not installed (pip install -r requirements-dev.txt)")
    found = [(family, image) for family, source, image in negatives.packaged() if source.startswith("dipy")]
    families = [family for family, _ in found]
    assert families.count(negatives.VIEW) == 1 and families.count(negatives.SEQUENCE) >= 4
    coronal = next(image for family, image in found if family == negatives.VIEW)
    top, bottom = coronal[:64].mean(), coronal[-64:].mean()
    assert top > bottom      # upright: the brain's top half is in the picture's top, the empty neck area below


def test_to_u8_scales_16_bit_by_robust_percentiles() -> None:
    ramp = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    image = negatives.to_u8(ramp)
    assert image.shape == (256, 256, 3) and image.min() == 0 and image.max() == 255


def test_pixel_features_see_identical_channels() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(20, 200, (256, 256, 1), dtype=np.uint8), 3, axis=2)
    colour = rng.integers(20, 200, (256, 256, 3), dtype=np.uint8)
    assert pixel_features(grey)[49] == pytest.approx(1.0)        # share of identical channels
    assert pixel_features(colour)[49] < 0.1


def test_flair_only_sample_slices_pass(predictor: Predictor, sample_records) -> None:
    images = [read_slice(r.image_path) for r in sample_records if r.tumour]
    flair = [np.repeat(image[..., 1:2], 3, axis=2) for image in images]
    flagged = [p.check.reasons for p in predictor.predict_many(flair) if p.check.flagged]
    assert len(flagged) <= max(1, len(images) // 50), flagged


def test_photographs_at_256_are_not_ok(predictor: Predictor) -> None:
    """Images that no calibration step saw: scikit-image's photographs, stretched to 256x256."""
    data = pytest.importorskip("skimage.data")
    photos = [resize_image(negatives.to_u8(getattr(data, name)())) for name in ("astronaut", "chelsea", "coffee")]
    verdicts = [p.check.verdict for p in predictor.predict_many(photos)]
    assert OK not in verdicts, verdicts


def test_the_one_class_distance_alone_flags_photographs_no_negative_resembles(predictor: Predictor) -> None:
    """The one-class half of the content layer needs no negative of a kind to flag it: photographs that are
    not among the negatives, stretched to 256x256, lie beyond its validation threshold; LGG slices do not."""
    data = pytest.importorskip("skimage.data")
    content = predictor.input_check.content
    photos = [resize_image(negatives.to_u8(getattr(data, name)())) for name in ("astronaut", "chelsea", "coffee")]
    lgg = [read_slice(r.image_path) for r in index_dataset(SAMPLES) if r.tumour][:8]
    features, _ = predictor.classifier_outputs(predictor.batch(photos + lgg))
    distances = content.distances(np.stack([content_features(i, f, content) for i, f in zip(photos + lgg, features)]))
    assert (distances[:3] > content.distance_threshold).all(), distances[:3] / content.distance_threshold
    assert (distances[3:] < content.distance_threshold).all(), distances[3:] / content.distance_threshold


def test_foreign_images_resized_to_256_are_flagged_more_often_than_before(predictor: Predictor, foreign: Path) -> None:
    """../shared/foreign is a test set of the check: never a negative, never used for a threshold or a setting. The
    issue's floor is 14 of 16; the calibration of issue 17 reaches 10 (7 before it, 4 before the content layer),
    which this test holds."""
    files = sorted(p for p in foreign.iterdir() if p.suffix.lower() in SUFFIXES)
    images = [resize_image(read_slice(p)) for p in files]
    checks = [p.check for p in predictor.predict_many(images)]
    flagged = [f.name for f, c in zip(files, checks) if c.flagged]
    assert len(flagged) >= 10, f"{len(flagged)} of {len(files)} flagged: {flagged}"


def test_shipped_calibration_names_its_families() -> None:
    calibration = load_calibration()
    assert calibration is not None and calibration.content is not None
    assert set(calibration.content.families) == set(negatives.FAMILIES)
    assert all(len(reason) > 20 for reason in calibration.content.reasons)
