"""The same test-split scans stored as scanners and pipelines write them (int16, float, a curve, 12-bit DICOM, 4D
int16): the input check and the masks must not care (the floors of docs/volumes.md, set against the 8-bit figures of
the models before the curve-augmented segmenter, carried in ``weights/encodings_test.json`` as its reference), and
the published table must be what the code gives."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg.cli import encodings as encodings_command
from brainseg.paths import WEIGHTS_DIR

PUBLISHED = WEIGHTS_DIR / "encodings_test.json"
MAX_FLAGGED_SHARE = 0.05
MAX_MEAN_DICE_DROP = 0.01
MAX_PATIENT_DICE_DROP = 0.03


@pytest.fixture(scope="module")
def result(kaggle_dir: Path) -> dict:
    return encodings_command.run(argparse.Namespace(data=str(kaggle_dir), split="test",
                                                    split_file=str(WEIGHTS_DIR / "split.json"),
                                                    weights=str(WEIGHTS_DIR), patients=0,
                                                    reference=str(PUBLISHED), out=None))


CURVE = "FLAIR, float32 NIfTI (4000 x v^0.8)"


def test_every_encoding_of_the_20_test_patients_meets_the_flag_and_mean_dice_floors(result: dict) -> None:
    rows = result["encodings"]
    assert len(rows) == 7 and all(row["patients"] == 20 for row in rows.values())
    for name, row in rows.items():
        assert row["flagged_share"] <= MAX_FLAGGED_SHARE, (name, row["flagged"], row["slices"])
        assert row["vs_reference"]["dice_mean_change"] >= -MAX_MEAN_DICE_DROP, (name, row["vs_reference"])
        if name != CURVE:
            assert row["dice_mean_change"] >= -MAX_MEAN_DICE_DROP, (name, row["dice_mean_change"])


# Floors the shipped models do not reach (docs/volumes.md, docs/experiments.md). Strict: models that reach one turn
# the test red, so that the docs are updated with them.
@pytest.mark.xfail(strict=True, reason="not met: the curve 4000 x v^0.8 scores 0.031 below the same models' 8-bit "
                   "files (0.044 above the reference's)")
def test_a_curve_keeps_the_mean_dice_of_the_same_models_8_bit_files(result: dict) -> None:
    assert result["encodings"][CURVE]["dice_mean_change"] >= -MAX_MEAN_DICE_DROP


@pytest.mark.xfail(strict=True, reason="not met: against the reference's 8-bit files, TCGA_DU_7302 -0.068 (FLAIR "
                   "int16, float x3.7, 12-bit DICOM), TCGA_DU_6404 -0.141 (the curve), TCGA_CS_5396 -0.083 (4D; its "
                   "4D uint8 file -0.082 too); against the same models' 8-bit files TCGA_DU_8165, a small tumour, "
                   "-0.15 to -0.38")
def test_no_test_patient_loses_more_than_003_dice_in_any_encoding(result: dict) -> None:
    for name, row in result["encodings"].items():
        for against in (row, row["vs_reference"]):
            assert against["worst_patient"]["dice_change"] >= -MAX_PATIENT_DICE_DROP, (name, against)


def test_the_published_table_is_reproduced(result: dict) -> None:
    published = json.loads(PUBLISHED.read_text())["encodings"]
    for name, row in result["encodings"].items():
        # bf16 kernels differ between CPUs: a slice near a threshold may turn, as in test_quality
        assert abs(row["flagged"] - published[name]["flagged"]) <= 2, name
        assert row["dice_mean"] == pytest.approx(published[name]["dice_mean"], abs=0.005), name


# A scan's matrix (docs/experiments.md "2026-12-08"): the same storages resampled to a scanner's matrix size,
# against the same storage at 256x256 in this run.
MATRICES = {"FLAIR, int16 NIfTI (x16 + 100)": 512, "three sequences, 4D int16 NIfTI (x16)": 384}


def _resampled(images: list, truths: list, side: int) -> tuple[list, list]:
    from PIL import Image
    images = [np.asarray(Image.fromarray(i).resize((side, side), Image.BICUBIC)) for i in images]
    truths = [np.asarray(Image.fromarray(t.astype(np.uint8)).resize((side, side), Image.NEAREST)) > 0 for t in truths]
    return images, truths


@pytest.fixture(scope="module")
def matrices(kaggle_dir: Path) -> dict[str, dict[str, tuple[int, int, float]]]:
    """Per storage (``MATRICES``, and FLAIR at 128x128 on two patients): per test patient, flagged slices, slices and
    per-volume Dice."""
    from brainseg.config import pipeline_settings
    from brainseg.data.index import by_patient, index_dataset, load_split
    from brainseg.evaluation.encodings import encodings, score
    from brainseg.inference.predictor import Predictor
    from brainseg.io.slices import read_mask, read_slice

    patients = load_split(WEIGHTS_DIR / "split.json")["test"]
    predictor, settings = Predictor(), pipeline_settings()
    scores: dict[str, dict[str, tuple[int, int, float]]] = {}
    for index, (patient, rows) in enumerate(by_patient(index_dataset(kaggle_dir, patients=patients)).items()):
        images = [read_slice(r.image_path) for r in rows]
        truths = [read_mask(r.mask_path, shape=i.shape[:2]) for r, i in zip(rows, images)]
        sides = [*MATRICES.items(), *([("FLAIR, int16 NIfTI (x16 + 100)", 128)] if index < 2 else [])]
        for name, side in sides:
            resampled, resampled_truths = _resampled(images, truths, side)
            scores.setdefault(f"{name} at {side}x{side}", {})[patient] = score(
                predictor, encodings(resampled)[name](), resampled_truths, settings)
    return scores


def test_a_scanners_matrix_keeps_the_flags_and_the_mean_dice_of_256(matrices: dict, result: dict) -> None:
    for name, side in MATRICES.items():
        rows = matrices[f"{name} at {side}x{side}"]
        assert len(rows) == 20
        flagged, slices = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
        changes = {p: r[2] - result["encodings"][name]["per_patient"][p]["dice"] for p, r in rows.items()}
        worst = min(changes, key=changes.get)
        print(f"{name} at {side}x{side}: {flagged} of {slices} flagged; per-volume Dice change against 256x256 "
              f"mean {np.mean(list(changes.values())):+.4f}, worst {worst} {changes[worst]:+.4f}")
        assert flagged <= MAX_FLAGGED_SHARE * slices, (name, flagged, slices)
        assert np.mean(list(changes.values())) >= -MAX_MEAN_DICE_DROP, (name, changes)


def test_a_128_matrix_is_still_flagged_on_every_slice(matrices: dict) -> None:
    rows = matrices["FLAIR, int16 NIfTI (x16 + 100) at 128x128"]
    assert len(rows) == 2 and all(flagged == slices for flagged, slices, _ in rows.values())
