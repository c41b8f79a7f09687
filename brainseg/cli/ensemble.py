"""``brainseg ensemble``: the fold members together on patients none of them trained on."""
from __future__ import annotations

import argparse

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"), help="split JSON (train/val/test)")
    parser.add_argument("--members", nargs="+", required=True,
                        help="segmenter weights of folds 0, 1, ... in fold order")
    parser.add_argument("--patients", choices=("test", "unlisted"), required=True,
                        help="test: the split file's test patients (the final run); unlisted: the patients in "
                             "--data that the split file does not name")
    parser.add_argument("--threshold", type=float, default=0.5, help="segmentation threshold")
    parser.add_argument("--out", help="write the JSON here")


def run(args: argparse.Namespace) -> dict:
    from brainseg.evaluation.ensemble import compare_ensemble
    return compare_ensemble(args)
