"""The same test-split scans stored as scanners and pipelines write them (int16, float, a curve, 12-bit DICOM, 4D
int16): the input check and the masks must not care (the floors of docs/volumes.md), and the published table in
``weights/encodings_test.json`` must be what the code gives."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

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
                                                    weights=str(WEIGHTS_DIR), patients=0, out=None))


CURVE = "FLAIR, float32 NIfTI (4000 x v^0.8)"


def test_every_encoding_of_the_20_test_patients_meets_the_flag_and_mean_dice_floors(result: dict) -> None:
    rows = result["encodings"]
    assert len(rows) == 7 and all(row["patients"] == 20 for row in rows.values())
    for name, row in rows.items():
        assert row["flagged_share"] <= MAX_FLAGGED_SHARE, (name, row["flagged"], row["slices"])
        if name != CURVE:
            assert row["dice_mean_change"] >= -MAX_MEAN_DICE_DROP, (name, row["dice_mean_change"])


# Floors the shipped mapping does not reach (docs/volumes.md, docs/experiments.md). Strict: a mapping that reaches
# them turns the test red, so that the docs are updated with it.
@pytest.mark.xfail(strict=True, reason="not met: the curve 4000 x v^0.8 loses 0.020 on average, TCGA_DU_6404 -0.835; "
                   "a map through the scan's own range cannot tell a curve from a patient's contrast")
def test_a_curve_keeps_the_mean_dice_of_the_8_bit_files(result: dict) -> None:
    assert result["encodings"][CURVE]["dice_mean_change"] >= -MAX_MEAN_DICE_DROP


@pytest.mark.xfail(strict=True, reason="not met: TCGA_DU_7302 -0.034 (FLAIR int16, float x3.7, 12-bit DICOM); the "
                   "curve: TCGA_DU_6404 -0.835 and three patients -0.032 to -0.046; training and validation "
                   "patients: 8 patient-encodings of 240 below -0.03")
def test_no_test_patient_loses_more_than_003_dice_in_any_encoding(result: dict) -> None:
    for name, row in result["encodings"].items():
        assert row["worst_patient"]["dice_change"] >= -MAX_PATIENT_DICE_DROP, (name, row["worst_patient"])


def test_the_published_table_is_reproduced(result: dict) -> None:
    published = json.loads(PUBLISHED.read_text())["encodings"]
    for name, row in result["encodings"].items():
        # bf16 kernels differ between CPUs: a slice near a threshold may turn, as in test_quality
        assert abs(row["flagged"] - published[name]["flagged"]) <= 2, name
        assert row["dice_mean"] == pytest.approx(published[name]["dice_mean"], abs=0.005), name
