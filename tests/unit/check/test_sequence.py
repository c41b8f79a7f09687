"""The input check's grey-volume sequence layer (:mod:`brainseg.check.sequence`) with the shipped calibration, on the
bundled sample patients' real slices: a grey T1 volume is said to look like T1, a grey FLAIR volume is not."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from brainseg.check import sequence
from brainseg.check.assess import load_calibration, t1_evidence
from brainseg.cli import main
from brainseg.data.index import by_patient, index_dataset
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR
from brainseg.training.sequence import FLAIR, T1, grey_volumes

ROOT = Path(__file__).resolve().parents[3]
VOLUME_PAGE = "brainseg/app/pages/volume.py"


@pytest.fixture(scope="module")
def calibration():
    found = load_calibration()
    if found is None or found.sequence is None:
        pytest.skip("the shipped input-check calibration has no sequence network")
    return found


@pytest.fixture(scope="module")
def sample_volumes() -> list[tuple[str, int, list[np.ndarray]]]:
    return grey_volumes(index_dataset(SAMPLES_DIR))


def evidence_of(volume: list[np.ndarray], calibration) -> list[float | None]:
    """Each grey slice's evidence as the app measures it: copied to three channels, as one-sequence slices."""
    return t1_evidence([np.repeat(grey[..., None], 3, axis=2) for grey in volume], [True] * len(volume), calibration)


def test_numpy_members_equal_torch_convolutions_and_the_model_is_their_mean(calibration, sample_volumes) -> None:
    grey = sample_volumes[0][2][len(sample_volumes[0][2]) // 2]
    expected = []
    for net in calibration.sequence:
        x = torch.from_numpy(sequence.grey_input(grey))[None, None]
        for weight, bias in zip(net.weights, net.biases):
            x = F.relu(F.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias), stride=2, padding=1))
        expected.append(float(x.mean(dim=(2, 3))[0] @ torch.from_numpy(net.head_weight)) + net.head_bias)
        assert sequence.sequence_logit(grey, (net,)) == pytest.approx(expected[-1], abs=1e-4)
    assert len(expected) == len(calibration.sequence) > 1 and np.ptp(expected) > 0   # distinct members
    assert sequence.sequence_logit(grey, calibration.sequence) == pytest.approx(np.mean(expected), abs=1e-4)


def test_bundled_patients_grey_t1_volumes_look_t1_and_their_flair_volumes_do_not(calibration,
                                                                                  sample_volumes) -> None:
    verdicts = {(patient, label): sequence.volume_looks_t1(evidence_of(volume, calibration))
                for patient, label, volume in sample_volumes}
    assert {label for _, label in verdicts} == {FLAIR, T1}
    assert not any(flagged for (_, label), flagged in verdicts.items() if label == FLAIR), verdicts
    assert all(flagged for (_, label), flagged in verdicts.items() if label == T1), verdicts


def test_only_one_sequence_slices_with_brain_carry_evidence(calibration) -> None:
    records = next(iter(by_patient(index_dataset(SAMPLES_DIR)).values()))
    image = read_slice(records[len(records) // 2].image_path)
    grey = np.repeat(image[..., 1:2], 3, axis=2)
    predictor = Predictor()
    one_sequence = [p.check.one_sequence for p in predictor.predict_many([image, grey, np.zeros_like(image)])]
    assert one_sequence == [False, True, True]
    evidence = t1_evidence([image, grey, np.zeros_like(image)], one_sequence, calibration)
    assert evidence[0] is None and isinstance(evidence[1], float) and evidence[2] is None   # no brain: nothing to say


def test_a_volume_needs_three_scored_slices_and_a_positive_mean() -> None:
    assert not sequence.volume_looks_t1([5.0, 4.0, None, None])
    assert sequence.volume_looks_t1([5.0, 4.0, -1.0, None])
    assert not sequence.volume_looks_t1([5.0, -4.0, -2.0])
    assert sequence.volume_warning([1.0, 1.0, 1.0]).startswith("one MRI sequence that looks T1-weighted")
    assert sequence.volume_warning([-1.0, -1.0, -1.0]) == ""


def grey_nifti(volume: list[np.ndarray], path: Path) -> Path:
    """A 3D NIfTI of one sequence (x, y, z), as a scanner export of a single series would be."""
    stored = np.stack(volume).transpose(2, 1, 0)
    path.write_bytes(gzip.compress(nib.Nifti1Image(stored, np.diag([-0.94, -0.94, 3.3, 1.0])).to_bytes()))
    return path


def test_predict_warns_about_a_grey_t1_volume_and_not_about_its_flair(calibration, sample_volumes,
                                                                       tmp_path: Path, capsys) -> None:
    patient = sample_volumes[0][0]
    flair = next(v for p, label, v in sample_volumes if p == patient and label == FLAIR)
    t1 = next(v for p, label, v in sample_volumes if p == patient and label == T1)
    scans = [grey_nifti(flair, tmp_path / "flair.nii.gz"), grey_nifti(t1, tmp_path / "t1.nii.gz")]

    assert main(["predict", *map(str, scans), "--out", str(tmp_path / "out")]) == 0

    warned = [line for line in capsys.readouterr().err.splitlines() if "looks T1-weighted" in line]
    assert len(warned) == 1 and warned[0].startswith(str(scans[1])), warned


def test_the_page_warns_about_an_uploaded_grey_t1_volume(calibration, sample_volumes, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(ROOT)
    t1 = next(v for _, label, v in sample_volumes if label == T1)
    scan = grey_nifti(t1, tmp_path / "t1.nii.gz")
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    app.run().switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value([(scan.name, scan.read_bytes(), "application/gzip")]).run()
    assert not app.exception and not app.error
    assert any("looks T1-weighted" in w.value for w in app.warning), [w.value for w in app.warning]


def three_channel_nifti(volume: list[np.ndarray], path: Path) -> Path:
    """A 4D NIfTI of three volumes (x, y, z, sequence), as a user may assemble one."""
    stored = np.stack(volume).transpose(2, 1, 0, 3)
    path.write_bytes(gzip.compress(nib.Nifti1Image(stored, np.diag([-0.94, -0.94, 3.3, 1.0])).to_bytes()))
    return path


@pytest.fixture(scope="module")
def sample_rgb_volumes() -> dict[str, list[np.ndarray]]:
    return {patient: [read_slice(r.image_path) for r in rows]
            for patient, rows in by_patient(index_dataset(SAMPLES_DIR)).items()}


def test_bundled_patients_channels_look_in_order_and_flair_moved_out_of_the_middle_does_not(
        calibration, sample_rgb_volumes) -> None:
    model, threshold = calibration.sequence, calibration.sequence_threshold
    for patient, volume in sample_rgb_volumes.items():
        assert sequence.order_warning(volume, model, threshold) == "", patient
        for order in ((1, 0, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0)):
            moved = [np.ascontiguousarray(image[..., order]) for image in volume]
            if all(np.array_equal(a[..., 1], b[..., 1]) for a, b in zip(moved, volume)):
                continue   # the dataset filled a channel with FLAIR, and that copy is now in the middle
            warning = sequence.order_warning(moved, model, threshold)
            assert warning.startswith("channels that look out of order"), (patient, order)
        swapped = [np.ascontiguousarray(image[..., (2, 1, 0)]) for image in volume]
        assert sequence.order_warning(swapped, model, threshold) == "", patient   # FLAIR in place: cannot be seen


def test_one_sequence_volumes_get_no_order_warning(calibration, sample_volumes) -> None:
    grey = [np.repeat(g[..., None], 3, axis=2) for g in next(v for _, label, v in sample_volumes if label == T1)]
    assert sequence.order_warning(grey, calibration.sequence, calibration.sequence_threshold) == ""


def test_predict_and_the_page_warn_about_a_volume_with_flair_out_of_the_middle(
        calibration, sample_rgb_volumes, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = next(iter(sample_rgb_volumes.values()))
    in_order = three_channel_nifti(volume, tmp_path / "in_order.nii.gz")
    flair_first = three_channel_nifti([np.ascontiguousarray(i[..., (1, 0, 2)]) for i in volume],
                                      tmp_path / "flair_first.nii.gz")

    assert main(["predict", str(in_order), str(flair_first), "--out", str(tmp_path / "out")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "look out of order" in line]
    assert len(warned) == 1 and warned[0].startswith(str(flair_first)), warned

    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(ROOT)
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    app.run().switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value(
        [(flair_first.name, flair_first.read_bytes(), "application/gzip")]).run()
    assert not app.exception and not app.error
    assert any("look out of order" in w.value for w in app.warning), [w.value for w in app.warning]
