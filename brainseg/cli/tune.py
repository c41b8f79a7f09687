"""``brainseg tune``: choose the pipeline's thresholds on the validation patients."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR))
    parser.add_argument("--max-fpr", type=float, default=0.03, help="largest false-positive rate on tumour-free slices")
    parser.add_argument("--members", nargs="+",
                        help="cross-validation members, folds 0, 1, ... in order: each validation patient is segmented "
                             "by the member that never trained on it (default: the shipped segmenter)")
    parser.add_argument("--seg-threshold", type=float, help="keep this segmentation threshold (e.g. crossval's)")
    parser.add_argument("--gate", type=float, help="keep this classifier gate")
    parser.add_argument("--largest-3d-component", action="store_true",
                        help="volumes keep only their largest 3D tumour (when crossval found it better)")
    parser.add_argument("--uncertainty", choices=("members", "flips"), default="flips",
                        help="the app's default uncertainty panel")
    parser.add_argument("--note", default="", help="where the fixed settings were chosen, for the record")
    parser.add_argument("--out", default=str(WEIGHTS_DIR / "pipeline.json"))


def run(args: argparse.Namespace) -> dict:
    from brainseg.evaluation.evaluate import evaluation_records, predict_records
    from brainseg.evaluation.tune import GATES, choose_gate, choose_threshold, predict_out_of_fold
    from brainseg.inference.predictor import Predictor
    records = evaluation_records(args.data, "val", args.split_file)
    results = (predict_out_of_fold(records, args.weights, args.members, args.split_file) if args.members
               else predict_records(records, Predictor(args.weights, check=False)))
    threshold = choose_threshold(results) if args.seg_threshold is None else args.seg_threshold
    chosen = choose_gate(results, threshold, args.max_fpr, GATES if args.gate is None else (args.gate,),
                         args.largest_3d_component)
    segmenter = (f"each validation patient segmented by the member of {len(args.members)} that never trained on it"
                 if args.members else "the shipped segmenter")
    settings = {"seg_threshold": threshold, "gate": chosen["gate"], "min_area": chosen["min_area"],
                "largest_3d_component": args.largest_3d_component, "uncertainty": args.uncertainty,
                "chosen_on": f"validation split: {len({r.record.patient for r in results})} patients, "
                             f"{len(results)} slices; {segmenter}" + (f"; {args.note}" if args.note else ""),
                "validation_detection": {k: chosen[k] for k in ("accuracy", "sensitivity", "specificity",
                                                                 "false_positive_rate")},
                "validation_pipeline_volume_dice": chosen["volume_dice"]}
    Path(args.out).write_text(json.dumps(settings, indent=1) + "\n")
    print(json.dumps(settings, indent=1))
    return settings
