"""The input check on real files, through ``Predictor.predict_many`` (what the app calls) and the shipped
calibration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg.check.assess import CHECK_JSON, CHECK_TENSORS, OK, judge_size, load_calibration
from brainseg.data.index import index_dataset
from brainseg.errors import BrainsegError
from brainseg.evaluation.encodings import nifti
from brainseg.inference.predictor import Predictor
from brainseg.io.intensity import LANDMARKS_FILE
from brainseg.io.slices import SUFFIXES, read_slice
from brainseg.io.volumes import read_volume
from brainseg.models.checksums import check_checksums
from brainseg.models.weights import CHECKSUMS
from brainseg.paths import WEIGHTS_DIR
from brainseg.training.calibrate import EXPECTED, FALSE_ALARM_TARGET, calibrate, validation_threshold, variants

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    predictor = Predictor()
    assert predictor.input_check is not None, "weights/input_check.json is missing: run python -m brainseg calibrate"
    return predictor


@pytest.fixture(scope="module")
def sample_tumour_images() -> list[np.ndarray]:
    return [read_slice(r.image_path) for r in index_dataset(SAMPLES) if r.tumour]


def test_every_foreign_image_is_flagged_with_reasons(predictor: Predictor, foreign: Path) -> None:
    files = sorted(p for p in foreign.iterdir() if p.suffix.lower() in SUFFIXES)
    assert len(files) == 16
    for path, prediction in zip(files, predictor.predict_many([read_slice(p) for p in files])):
        check = prediction.check
        assert check.flagged and check.verdict != OK, f"{path.name} passed the check (score {check.score:.2f})"
        assert check.reasons and all(len(reason) > 20 for reason in check.reasons), path.name


def test_greyscale_web_mri_is_named_one_sequence(predictor: Predictor, foreign: Path) -> None:
    image = read_slice(foreign / "mri_tumour_axial_flair_gray_1024.jpg")
    reasons = predictor.predict(image).check.reasons
    assert any("one MRI sequence" in reason for reason in reasons)
    assert any("1024x1024" in reason for reason in reasons)


def test_lgg_originals_pass(predictor: Predictor, originals: Path) -> None:
    files = sorted(p for p in originals.glob("*.tif") if not p.stem.endswith("_mask"))
    for path, prediction in zip(files, predictor.predict_many([read_slice(p) for p in files])):
        assert prediction.check.verdict == OK, f"{path.name}: {prediction.check.reasons}"


def test_sample_tumour_slices_pass(predictor: Predictor, sample_tumour_images: list[np.ndarray]) -> None:
    assert len(sample_tumour_images) >= 10
    flagged = [p.check.reasons for p in predictor.predict_many(sample_tumour_images) if p.check.flagged]
    assert flagged == []


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_altered_lgg_slices_get_the_decided_verdict(
    predictor: Predictor, sample_tumour_images: list[np.ndarray], variant: str
) -> None:
    picks = sample_tumour_images[:: max(len(sample_tumour_images) // 4, 1)][:4]
    altered = [variants(image)[variant] for image in picks]
    verdicts = [p.check.verdict for p in predictor.predict_many(altered)]
    assert set(verdicts) <= set(EXPECTED[variant]), verdicts


@pytest.mark.parametrize(("shape", "scan", "reasons"), [
    ((256, 256), False, 0), ((512, 512), False, 1), ((256, 320), False, 2),
    ((512, 512), True, 0), ((192, 192), True, 0), ((1024, 1024), True, 0), ((240, 300), True, 0),
    ((128, 128), True, 1), ((2048, 2048), True, 1), ((256, 384), True, 2),
])
def test_a_scans_matrix_says_nothing_within_the_measured_sizes(shape: tuple[int, int], scan: bool,
                                                               reasons: int) -> None:
    assert len(judge_size(shape, scan)) == reasons


def _flair_volume(images: list[np.ndarray], side: int) -> list[np.ndarray]:
    """The slices' FLAIR resampled to ``side`` x ``side``, stored as an int16 NIfTI and read back as an upload."""
    flair = np.stack([np.asarray(Image.fromarray(image[..., 1]).resize((side, side), Image.BICUBIC))
                      for image in images]).astype(np.int16) * 12 + 40
    return read_volume([("flair.nii.gz", nifti(np.ascontiguousarray(flair.transpose(2, 1, 0))))]).images_u8


def test_a_512_scan_is_judged_on_content_and_a_128_one_on_its_size(
    predictor: Predictor, sample_tumour_images: list[np.ndarray]
) -> None:
    large = _flair_volume(sample_tumour_images, 512)
    assert large[0].shape == (512, 512, 3)
    checks = [p.check for p in predictor.predict_many(large, batch_size=4, scan=True)]
    assert sum(c.flagged for c in checks) <= 0.05 * len(checks), [c.reasons for c in checks if c.flagged]
    assert not any("size" in reason for c in checks for reason in c.reasons)
    alone = [p.check for p in predictor.predict_many(large[:4], batch_size=4)]     # the same slices uploaded one by one
    assert all(c.flagged and any("size 512x512" in r for r in c.reasons) for c in alone)
    small = predictor.predict_many(_flair_volume(sample_tumour_images, 128), scan=True)
    assert all(p.check.flagged and any("size 128x128" in r for r in p.check.reasons) for p in small)


def test_calibration_for_other_classifier_weights_is_refused(tmp_path: Path) -> None:
    for name in (CHECK_JSON, CHECK_TENSORS):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    shutil.copy(WEIGHTS_DIR / "segmenter.safetensors", tmp_path / "classifier.safetensors")
    with pytest.raises(BrainsegError, match="calibrated for other classifier weights"):
        load_calibration(tmp_path)


def test_no_calibration_means_no_check(tmp_path: Path) -> None:
    assert load_calibration(tmp_path) is None


def test_calibrate_records_its_features_file_in_the_checksums(tmp_path: Path) -> None:
    """A fresh calibration loads at once (the measurement step after it used to stop on a stale checksum)."""
    for name in ("classifier.safetensors", "segmenter.safetensors", LANDMARKS_FILE, CHECK_JSON, CHECK_TENSORS,
                 CHECKSUMS):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    records = index_dataset(SAMPLES)
    patients = sorted({r.patient for r in records})
    calibrate(Predictor(tmp_path, check=False), records[::6], records[1::12], [patients[:2], patients[2:]], tmp_path)
    assert load_calibration(tmp_path) is not None
    assert sorted(check_checksums(tmp_path)) == sorted(["classifier.safetensors", CHECK_TENSORS, LANDMARKS_FILE,
                                                        "segmenter.safetensors"])


def test_the_check_imports_neither_inference_nor_torch() -> None:
    """``assess`` sits below the Predictor: importing the check loads no inference module and no torch (the
    ``calibrate`` command, which needs a Predictor, is its own module above inference)."""
    code = (
        "import sys, brainseg.check.assess; "
        "print(sorted(m for m in ('brainseg.inference.predictor', 'brainseg.training.calibrate', 'torch') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_validation_threshold_holds_each_kind_of_upload_to_the_target() -> None:
    """Three-channel slices and FLAIR-only copies are thresholded together, but neither may be flagged more often
    than the target (a pooled quantile would put the false alarms on the group that scores higher)."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(1.0, 1.0, 2000)])
    groups = np.repeat([0, 1], 2000)
    threshold = validation_threshold(scores, groups)
    for group in (0, 1):
        assert (scores[groups == group] > threshold).mean() <= FALSE_ALARM_TARGET
    pooled = np.quantile(scores, 1 - FALSE_ALARM_TARGET)
    assert (scores[groups == 1] > pooled).mean() > FALSE_ALARM_TARGET
