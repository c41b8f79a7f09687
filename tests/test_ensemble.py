"""The ensemble command on the bundled sample patients (test split, unseen by the shipped segmenter and by the
fold-0 member): members alone, their mean, and which uncertainty marks the wrong pixels."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg import ensemble
from brainseg.data import load_folds
from brainseg.errors import BrainsegError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SPLIT_FILE = ROOT / "weights" / "split.json"
MEMBERS = [str(ROOT / "weights" / "folds" / "fold0.safetensors"), str(ROOT / "weights" / "segmenter.safetensors")]


def test_the_unseen_patients_are_the_folds_without_a_member() -> None:
    folds = load_folds(SPLIT_FILE)
    assert ensemble.unseen_patients(SPLIT_FILE, 3, None) == sorted(folds[3] + folds[4])
    assert ensemble.unseen_patients(SPLIT_FILE, 5, "test") == json.loads(SPLIT_FILE.read_text())["test"]
    with pytest.raises(BrainsegError, match="--split test"):
        ensemble.unseen_patients(SPLIT_FILE, 5, None)


def test_the_band_holds_every_pixel_near_truth_or_prediction() -> None:
    truth, mask = np.zeros((2, 64, 64), bool), np.zeros((2, 64, 64), bool)
    truth[0, 30, 30], mask[1, 5, 5] = True, True
    band = ensemble.error_band(mask, truth, pixels=4)
    assert band[0, 26:35, 26:35].all() and not band[0, 25, 30] and band[1, 1:10, 1:10].all()
    assert band.sum() == 2 * 81 and not ensemble.error_band(mask & False, truth & False).any()


def test_ensemble_on_patients_neither_member_saw(tmp_path) -> None:
    """Two real members on two sample patients of the test split, passed as the held-out patients of a third
    fold: the ensemble lands near its members, and both uncertainties mark wrong pixels better than chance."""
    split = json.loads(SPLIT_FILE.read_text())
    patients = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())[:2]
    split["folds"]["held_out"] = split["folds"]["held_out"][:2] + [patients]
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(split))
    out = tmp_path / "ensemble.json"
    result = ensemble.run(argparse.Namespace(data=str(SAMPLES), split_file=str(split_file), members=MEMBERS,
                                             split=None, threshold=0.5, out=str(out)))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["patients"] == patients and [m["member"] for m in result["members"]] == \
        ["fold0.safetensors", "segmenter.safetensors"]
    alone = [m["volume_dice_mean"] for m in result["members"]]
    assert min(alone) > 0.3 and min(alone) - 0.05 <= result["ensemble"]["volume_dice_mean"] <= max(alone) + 0.05
    low, high = result["ensemble"]["volume_dice_mean_interval_95"]
    assert low <= result["ensemble"]["volume_dice_mean"] <= high
    for name, auroc in result["uncertainty_auroc_for_wrong_pixels"].items():
        assert 0.6 < auroc <= 1.0, name
    assert 0 < result["uncertainty_pixels"]["wrong"] < result["uncertainty_pixels"]["counted"]
