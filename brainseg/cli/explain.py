"""``brainseg explain``: heat-map hit rates and TTA against the plain model on a split."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR))
    parser.add_argument("--patients", type=int, default=0, help="only the first N patients (quick checks)")
    parser.add_argument("--shifts", type=int, default=0, help="add shifts of this many pixels to the flips")
    parser.add_argument("--out", help="write the JSON here (e.g. weights/explain.json)")


def run(args: argparse.Namespace) -> dict:
    from brainseg.config import pipeline_settings
    from brainseg.evaluation.evaluate import evaluation_records
    from brainseg.evaluation.heatmaps import cam_hit_rates, compare_tta
    from brainseg.explain import CAM_METHODS, FLIPS, STAGES, with_shifts
    from brainseg.inference.predictor import Predictor
    records = evaluation_records(args.data, args.split, args.split_file, args.patients)
    predictor = Predictor(args.weights)
    members = with_shifts(FLIPS, args.shifts) if args.shifts else FLIPS
    settings = pipeline_settings(Path(args.weights))
    result = {"split": args.split, "split_file": Path(args.split_file).name,
              "heat_maps": cam_hit_rates(records, predictor, settings["gate"],
                                         [(method, layer) for method in CAM_METHODS for layer in STAGES]),
              "tta": compare_tta(records, predictor, members, settings)}
    print(json.dumps({"heat_maps": result["heat_maps"],
                      **{k: {n: v for n, v in result["tta"][k].items() if n != "per_patient_volume_dice"}
                         for k in ("plain", "tta")}}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
