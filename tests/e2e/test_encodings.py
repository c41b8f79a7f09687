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


def test_every_encoding_of_the_20_test_patients_meets_the_flag_and_mean_dice_floors(result: dict) -> None:
    rows = result["encodings"]
    assert len(rows) == 7 and all(row["patients"] == 20 for row in rows.values())
    for name, row in rows.items():
        assert row["flagged_share"] <= MAX_FLAGGED_SHARE, (name, row["flagged"], row["slices"])
        assert row["dice_mean_change"] >= -MAX_MEAN_DICE_DROP, (name, row["dice_mean_change"])


# A floor the shipped mapping does not reach (docs/volumes.md, docs/experiments.md). Strict: a mapping that reaches
# it turns the test red, so that the docs are updated with it.
@pytest.mark.xfail(strict=True, reason="not met: TCGA_DU_6404 -0.167 (FLAIR int16, float x3.7, 12-bit DICOM) "
                   "and TCGA_DU_8165 -0.213 (4D int16) below their own 8-bit Dice on the test split; "
                   "validation: worst -0.007")
def test_no_test_patient_loses_more_than_003_dice_in_any_encoding(result: dict) -> None:
    for name, row in result["encodings"].items():
        assert row["worst_patient"]["dice_change"] >= -MAX_PATIENT_DICE_DROP, (name, row["worst_patient"])


def test_the_published_table_is_reproduced(result: dict) -> None:
    published = json.loads(PUBLISHED.read_text())["encodings"]
    for name, row in result["encodings"].items():
        # bf16 kernels differ between CPUs: a slice near a threshold may turn, as in test_quality
        assert abs(row["flagged"] - published[name]["flagged"]) <= 2, name
        assert row["dice_mean"] == pytest.approx(published[name]["dice_mean"], abs=0.005), name
