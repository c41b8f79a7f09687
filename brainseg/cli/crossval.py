"""``brainseg crossval``: out-of-fold figures of the fold members over the development patients."""
from __future__ import annotations

import argparse

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"), help="split JSON with 'folds'")
    parser.add_argument("--members", nargs="+", required=True,
                        help="segmenter weights of folds 0, 1, ... in fold order (fewer than all folds: only those)")
    parser.add_argument("--reference", default=str(WEIGHTS_DIR / "segmenter.safetensors"),
                        help="segmenter to compare on the validation patients it never trained on")
    parser.add_argument("--out", help="write the JSON here")


def run(args: argparse.Namespace) -> dict:
    from brainseg.evaluation.crossval import cross_validate
    return cross_validate(args)
