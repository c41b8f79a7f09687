"""``brainseg calibrate``: fit the input check on the training split, thresholds on validation."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument(
        "--weights", default=str(WEIGHTS_DIR), help="folder with the safetensors files; output goes here"
    )
    parser.add_argument("--every", type=int, default=3, help="use every Nth training slice (default 3)")
    parser.add_argument("--foreign", help="folder of non-LGG images to report on (e.g. ../shared/foreign)")
    parser.add_argument("--no-measure", action="store_true", help="skip the test-split measurement")


def run(args: argparse.Namespace) -> dict:
    from brainseg.data.index import index_dataset, load_folds, load_split, make_folds, select
    from brainseg.inference.predictor import Predictor
    from brainseg.training.calibrate import calibrate, measure, summary

    records = index_dataset(args.data)
    split = load_split(args.split_file)
    predictor = Predictor(args.weights, check=False)
    train = select(records, split["train"])
    folds = load_folds(args.split_file) or make_folds(records, split["train"] + split["val"])
    payload = calibrate(predictor, train[:: args.every], select(records, split["val"]), folds, args.weights, train)
    print(json.dumps({k: v for k, v in payload.items() if k not in ("method", "content_reasons")}, indent=1))
    if args.no_measure:
        return payload
    predictor = Predictor(args.weights)
    result = measure(
        predictor,
        select(records, split["test"]),
        Path(args.foreign) if args.foreign else None,
        index_dataset(SAMPLES_DIR),
    )
    (Path(args.weights) / "input_check_measurement.json").write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    return payload
