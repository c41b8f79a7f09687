"""The ensemble command on the bundled sample patients (test split, unseen by the shipped segmenter and by the
fold-0 member): members alone, their mean, and which uncertainty marks the wrong pixels; only patients outside
the development split count as unseen."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg.cli import ensemble as ensemble_command
from brainseg.data.index import fold_split, load_folds
from brainseg.errors import BrainsegError
from brainseg.evaluation import ensemble

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"
SPLIT_FILE = ROOT / "weights" / "split.json"
MEMBERS = [str(ROOT / "weights" / "folds" / "fold0.safetensors"), str(ROOT / "weights" / "segmenter.safetensors")]


def test_only_patients_outside_the_development_split_are_unseen_by_the_members() -> None:
    """Member K trained on every development patient outside fold K: no fold's held-out patients are unseen by
    two members, so only test patients and patients the split file does not name qualify."""
    split = json.loads(SPLIT_FILE.read_text())
    development = split["train"] + split["val"]
    folds = load_folds(SPLIT_FILE)
    for fold, held_out in enumerate(folds):
        others = [k for k in range(len(folds)) if k != fold]
        assert all(set(held_out) <= set(fold_split(split, folds, k)["train"]) for k in others)
    available = development + split["test"][:3] + ["TCGA_XX_0000_20000101"]
    assert ensemble.unseen_patients(SPLIT_FILE, "test", available) == sorted(split["test"][:3])
    assert ensemble.unseen_patients(SPLIT_FILE, "unlisted", available) == ["TCGA_XX_0000_20000101"]
    with pytest.raises(BrainsegError, match="no unlisted patient"):
        ensemble.unseen_patients(SPLIT_FILE, "unlisted", development)


def test_the_band_holds_every_pixel_near_truth_or_prediction() -> None:
    truth, mask = np.zeros((2, 64, 64), bool), np.zeros((2, 64, 64), bool)
    truth[0, 30, 30], mask[1, 5, 5] = True, True
    band = ensemble.error_band(mask, truth, pixels=4)
    assert band[0, 26:35, 26:35].all() and not band[0, 25, 30] and band[1, 1:10, 1:10].all()
    assert band.sum() == 2 * 81 and not ensemble.error_band(mask & False, truth & False).any()


def test_ensemble_on_patients_neither_member_saw(tmp_path) -> None:
    """Two real members on two sample patients of the test split: the ensemble lands near its members, and both
    uncertainties mark wrong pixels better than chance."""
    patients = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())[:2]
    data = tmp_path / "data"
    data.mkdir()
    for patient in patients:
        (data / patient).symlink_to(SAMPLES / patient)
    out = tmp_path / "ensemble.json"
    result = ensemble_command.run(argparse.Namespace(data=str(data), split_file=str(SPLIT_FILE), members=MEMBERS,
                                             patients="test", threshold=0.5, out=str(out)))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["patients"] == patients and result["which"] == "the test split"
    assert [m["member"] for m in result["members"]] == ["fold0.safetensors", "segmenter.safetensors"]
    alone = [m["volume_dice_mean"] for m in result["members"]]
    assert min(alone) > 0.3 and min(alone) - 0.05 <= result["ensemble"]["volume_dice_mean"] <= max(alone) + 0.05
    low, high = result["ensemble"]["volume_dice_mean_interval_95"]
    assert low <= result["ensemble"]["volume_dice_mean"] <= high
    for name, auroc in result["uncertainty_auroc_for_wrong_pixels"].items():
        assert 0.6 < auroc <= 1.0, name
    assert 0 < result["uncertainty_pixels"]["wrong"] < result["uncertainty_pixels"]["counted"]
