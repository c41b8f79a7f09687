"""``brainseg evaluate``: metrics of the shipped weights on a kaggle_3m folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="which patients of the split JSON; 'all' = every patient in the folder")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with the safetensors files")
    parser.add_argument("--patients", type=int, default=0, help="only the first N patients (quick checks)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--out", help="write the metrics JSON here")


def run(args: argparse.Namespace) -> dict:
    from brainseg.config import pipeline_settings
    from brainseg.evaluation.evaluate import evaluation_records, predict_records, report, table
    from brainseg.inference.predictor import Predictor
    records = evaluation_records(args.data, args.split, args.split_file, args.patients)
    predictor = Predictor(args.weights, precision=args.precision)
    settings = pipeline_settings(Path(args.weights))
    result = {"split": args.split, "split_file": Path(args.split_file).name, "precision": predictor.precision,
              **report(predict_records(records, predictor), settings)}
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
