"""``brainseg train``: train the segmenter or the classifier."""
from __future__ import annotations

import argparse
from pathlib import Path


def curve_bound(text: str) -> float:
    """``--gamma``: at least 1 (the curves drawn lie in ``[1/G, G]``, so a value below 1 would mean none, silently)."""
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1 (1 = no curves; 1.5 draws powers in 1/1.5-1.5)")
    return value


def share(text: str) -> float:
    """A share of the training slices, in ``[0, 1]``."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be a share of the slices, from 0 to 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("segmenter", "classifier"))
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, history, best weights")
    parser.add_argument("--split", help="split JSON to use (default: make one, or reuse OUT/split.json)")
    parser.add_argument("--folds", type=int, default=0,
                        help="cross-validation: split the split file's train+val patients into this many folds "
                             "(written to the split file if it has none)")
    parser.add_argument("--fold", type=int, default=0, help="with --folds: which fold to hold out for validation")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, warm-up + cosine)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument(
        "--patience", type=int, default=10, help="early stop after this many epochs without a better validation metric"
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=1,
        help="validate (and keep the best weights) every N epochs and after the last; the others save "
        "the last weights only (validation is ~1/4 of a crop epoch on a CPU)",
    )
    parser.add_argument(
        "--crop", type=int, default=0, help="random crop side for training (multiple of 16; 0 = whole slice)"
    )
    parser.add_argument(
        "--negatives",
        type=float,
        default=None,
        help="tumour-free slices per tumour slice in each epoch (default: 0.5 segmenter, all classifier)",
    )
    parser.add_argument(
        "--gamma", type=curve_bound, default=1.0,
        help="contrast curves in augmentation: a power per channel drawn in [1/GAMMA, GAMMA] on half the slices "
        "(1 = none)",
    )
    parser.add_argument(
        "--flair-alone", type=share, default=0.0,
        help="share of training slices shown as FLAIR copied into the three channels, as a FLAIR-only upload is",
    )
    parser.add_argument(
        "--stored-as", type=share, default=0.0,
        help="share of training slices shown as the app reads their volume back from 16-bit or float storage "
        "(weights/intensity.safetensors): half linear, half through a power curve in [1/GAMMA, GAMMA]",
    )
    parser.add_argument(
        "--teacher",
        help="distil: the targets are this model's outputs (.safetensors, same kind) on each slice as stored, "
        "with the same channels, crop and flips, instead of the true masks or labels",
    )
    parser.add_argument("--input-size", type=int, default=128, help="classifier: side the ResNet50 sees")
    parser.add_argument("--resume", help="checkpoint to resume from (e.g. OUT/last.pt)")
    parser.add_argument("--init", help="start from these weights (.safetensors) with a fresh optimizer and schedule")
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="validate and save an exponential moving average of the weights with this decay, "
        "reached after a warm-up (0 = off)",
    )
    parser.add_argument(
        "--dice-weight",
        type=float,
        default=0.0,
        help="segmenter: add this weight times a per-image Dice loss on tumour slices",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="stop after the epoch that passes this wall-clock budget"
    )
    parser.add_argument(
        "--limit-patients", type=int, default=0, help="use only the first N patients of each part (smoke tests)"
    )
    parser.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps (smoke tests)")


def run(args: argparse.Namespace) -> Path:
    """Train one model; returns the path of its best weights."""
    from brainseg.training.train import train

    return train(args)
