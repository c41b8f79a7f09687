"""``python -m brainseg tune`` with cross-validation members: each validation patient segmented by the member that
held it out, fixed settings kept, the rest chosen and written to the pipeline file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from brainseg.cli import tune as tune_command
from brainseg.data.index import index_dataset, load_folds, make_folds, save_folds, save_split
from brainseg.evaluation import tune
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR

MEMBERS = [str(WEIGHTS_DIR / "segmenter.safetensors"), str(WEIGHTS_DIR / "folds" / "fold1.safetensors")]


def test_tune_with_members_predicts_each_patient_out_of_fold_and_keeps_fixed_settings(tmp_path: Path) -> None:
    records = index_dataset(SAMPLES_DIR)
    patients = sorted({r.patient for r in records})
    split_file = tmp_path / "split.json"
    save_split({"train": [], "val": patients, "test": []}, split_file, seed=0)
    save_folds(split_file, make_folds(records, patients, folds=2), seed=0)
    out = tmp_path / "pipeline.json"
    args = argparse.Namespace(data=str(SAMPLES_DIR), split_file=str(split_file), weights=str(WEIGHTS_DIR),
                              max_fpr=0.03, members=MEMBERS, seg_threshold=0.6, gate=0.2, largest_3d_component=True,
                              uncertainty="members", note="threshold from crossval", out=str(out))
    settings = tune_command.run(args)
    assert json.loads(out.read_text()) == settings
    assert settings["seg_threshold"] == 0.6 and settings["gate"] == 0.2 and settings["min_area"] in tune.MIN_AREAS
    assert settings["largest_3d_component"] is True and settings["uncertainty"] == "members"
    assert "never trained on it" in settings["chosen_on"] and "threshold from crossval" in settings["chosen_on"]

    results = tune.predict_out_of_fold(records, WEIGHTS_DIR, MEMBERS, split_file)
    assert sorted(r.record.name for r in results) == sorted(r.name for r in records)
    held_out = load_folds(split_file)
    for fold, member in enumerate(MEMBERS):
        first = next(r for r in results if r.record.patient == held_out[fold][0])
        own = Predictor(segmenters=[member], check=False).predict(read_slice(first.record.image_path))
        assert np.allclose(first.prediction.probability, own.probability, atol=1e-5)
