"""Folds, bootstrap intervals and out-of-fold figures, on the bundled sample patients and the shipped segmenter."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg import metrics
from brainseg.cli import crossval as crossval_command
from brainseg.data.index import fold_split, index_dataset, load_folds, load_split, make_folds, save_folds, save_split
from brainseg.errors import BrainsegError

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"
SEGMENTER = ROOT / "weights" / "segmenter.safetensors"


@pytest.fixture(scope="module")
def records():
    return index_dataset(SAMPLES)


def test_folds_are_deterministic_disjoint_and_cover_the_patients(records) -> None:
    patients = sorted({r.patient for r in records})
    folds = make_folds(records, patients, folds=2, seed=0)
    assert folds == make_folds(records, patients, folds=2, seed=0)
    assert sorted(sum(folds, [])) == patients
    assert [len(f) for f in folds] == [2, 2]
    assert make_folds(records, patients, folds=2, seed=1) != folds or len(patients) == 2


def test_shipped_split_has_five_stratified_folds_over_train_and_val() -> None:
    split_file = ROOT / "weights" / "split.json"
    split, folds = load_split(split_file), load_folds(split_file)
    assert folds is not None and len(folds) == 5
    development = sorted(split["train"] + split["val"])
    assert sorted(sum(folds, [])) == development
    assert {len(f) for f in folds} == {len(development) // 5}
    one = fold_split(split, folds, 2)
    assert set(one["val"]) == set(folds[2]) and not set(one["train"]) & set(one["val"])
    assert one["test"] == split["test"] and not set(one["train"]) & set(split["test"])


def test_fold_errors_are_clear(records) -> None:
    patients = sorted({r.patient for r in records})
    with pytest.raises(BrainsegError, match="cannot make 5 folds"):
        make_folds(records, patients, folds=5)
    with pytest.raises(BrainsegError, match="not in the data"):
        make_folds(records, patients + ["TCGA_XX_0000_00000000"], folds=2)
    with pytest.raises(BrainsegError, match="--fold must be in 0..1"):
        fold_split({"train": patients, "val": [], "test": []}, [patients[:2], patients[2:]], 2)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_patients() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0.5, 1.0, 10), rng.uniform(0.5, 1.0, 200)
    low, high = metrics.bootstrap_interval(few, metrics.resampled_mean)
    assert low < few.mean() < high
    low_many, high_many = metrics.bootstrap_interval(many, metrics.resampled_mean)
    assert high_many - low_many < high - low
    assert metrics.bootstrap_interval([0.7] * 5, metrics.resampled_median) == [0.7, 0.7]


def test_resampled_pooled_tversky_matches_the_metric_on_the_full_sample() -> None:
    counts = [metrics.Counts(90, 10, 5), metrics.Counts(50, 30, 20), metrics.Counts(7, 1, 30)]
    rows = metrics.count_rows(counts)
    whole = metrics.resampled_pooled_tversky(rows[None])[0]
    assert whole == pytest.approx(metrics.tversky(sum(counts, metrics.Counts(0, 0, 0))))


def test_out_of_fold_report_on_the_sample_patients(records, tmp_path: Path) -> None:
    """Two folds over the four sample patients, the shipped segmenter standing in for both members."""
    patients = sorted({r.patient for r in records})
    split_file = tmp_path / "split.json"
    save_split({"train": patients, "val": [], "test": []}, split_file, seed=0)
    save_folds(split_file, make_folds(records, patients, folds=2), seed=0)
    args = argparse.Namespace(data=str(SAMPLES), split_file=str(split_file), members=[str(SEGMENTER)] * 2,
                              reference=str(SEGMENTER), out=str(tmp_path / "crossval.json"))
    result = crossval_command.run(args)
    assert json.loads((tmp_path / "crossval.json").read_text())["folds_evaluated"] == 2
    oof = result["out_of_fold"]
    assert oof["patients"] == 4 and set(oof["per_patient_volume_dice"]) == set(patients)
    low, high = oof["volume_dice_mean_interval_95"]
    assert low <= oof["volume_dice_mean"] <= high
    assert 0.3 < oof["volume_dice_mean"] < 1.0
    assert result["fair_comparison"] is None            # no validation patients among the samples
    tuned = result["out_of_fold_tuned"]
    assert tuned["volume_dice_mean"] >= oof["volume_dice_mean"]   # the grid includes threshold 0.5, no filter


def test_crossval_refuses_a_split_without_folds(tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    save_split({"train": [], "val": [], "test": []}, split_file, seed=0)
    args = argparse.Namespace(data=str(SAMPLES), split_file=str(split_file), members=[str(SEGMENTER)],
                              reference=str(SEGMENTER), out=None)
    with pytest.raises(BrainsegError, match="no 'folds'"):
        crossval_command.run(args)
