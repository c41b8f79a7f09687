"""``python -m brainseg tune``: choose the pipeline's thresholds on the validation patients (never the test split).

The pipeline calls a slice "tumour" when the classifier's probability reaches the gate and the segmenter finds
a connected region of at least ``min_area`` pixels above its threshold. The segmentation threshold maximises
the validation patients' per-volume Dice; the gate and minimum area keep the false-positive rate on tumour-free
slices at or under ``--max-fpr`` with the highest sensitivity (Youden's J where nothing meets that), ties going
to the best pipeline per-volume Dice.

With the cross-validation members (``--members``, folds 0, 1, ... in order), each validation patient is segmented
by the one member that never trained on it (the classifier never trained on any of them), and the segmentation
threshold can be fixed from ``crossval``'s out-of-fold tuning over all 80 development patients (``--seg-threshold``)
and the gate kept (``--gate``): then only the minimum region is chosen here.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from skimage.measure import label

from brainseg import metrics
from brainseg.data import SliceRecord, load_folds
from brainseg.errors import BrainsegError
from brainseg.evaluate import Evaluated, evaluation_records, pipeline_masks, predict_records, volume_report
from brainseg.inference import Predictor
from brainseg.weights import WEIGHTS_DIR

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
GATES = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
MIN_AREAS = (0, 10, 25, 50, 75, 100, 150, 200, 300)


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


def choose_threshold(results: Sequence[Evaluated]) -> float:
    """The segmentation threshold with the best mean per-volume Dice (segmenter alone)."""
    def volume_dice(threshold: float) -> float:
        return volume_report(results, [r.prediction.probability >= threshold for r in results])["dice_mean"]
    return max(THRESHOLDS, key=volume_dice)


def largest_region(mask: np.ndarray) -> int:
    """Pixels in the mask's largest 8-connected region (0 when empty)."""
    return int(np.bincount(label(mask, connectivity=2).ravel())[1:].max(initial=0))


def pipeline_volume_dice(results: Sequence[Evaluated], threshold: float, gate: float, min_area: int,
                         largest_3d: bool = False) -> float:
    """Mean per-volume Dice of the pipeline's masks at these settings."""
    settings = {"seg_threshold": threshold, "gate": gate, "min_area": min_area, "largest_3d_component": largest_3d}
    return volume_report(results, pipeline_masks(results, settings))["dice_mean"]


def choose_gate(results: Sequence[Evaluated], threshold: float, max_fpr: float,
                gates: Sequence[float] = GATES, largest_3d: bool = False) -> dict:
    """Gate and minimum area: highest sensitivity (then accuracy) with FPR <= max_fpr, else highest Youden's J;
    among settings that tie on those, the best pipeline per-volume Dice."""
    labels = np.array([r.truth.any() for r in results])
    scores = np.array([r.prediction.tumour_probability for r in results])
    areas = np.array([largest_region(r.prediction.probability >= threshold) for r in results])
    candidates = []
    for gate, min_area in itertools.product(gates, MIN_AREAS):
        found = metrics.detection((scores >= gate) & (areas >= max(min_area, 1)), labels)
        candidates.append({"gate": float(gate), "min_area": int(min_area), **found})
    allowed = [c for c in candidates if c["false_positive_rate"] <= max_fpr]
    if allowed:
        pool, rank = allowed, lambda c: (c["sensitivity"], c["accuracy"])
    else:
        pool, rank = candidates, lambda c: c["sensitivity"] + c["specificity"]
    top = max(rank(c) for c in pool)
    tied = [{**c, "volume_dice": pipeline_volume_dice(results, threshold, c["gate"], c["min_area"], largest_3d)}
            for c in pool if rank(c) == top]
    return max(tied, key=lambda c: c["volume_dice"])


def predict_out_of_fold(records: Sequence[SliceRecord], weights_dir: str | Path, members: Sequence[str],
                        split_file: str | Path) -> list[Evaluated]:
    """Every record predicted with the shipped classifier and the segmenter of the fold that held its patient
    out (``members[k]`` for fold ``k``)."""
    held_out = load_folds(split_file)
    if held_out is None or len(members) != len(held_out):
        raise BrainsegError(f"{split_file}: {len(members)} members need as many folds "
                            f"(found {0 if held_out is None else len(held_out)})")
    results = []
    for fold, member in enumerate(members):
        chunk = [r for r in records if r.patient in set(held_out[fold])]
        if chunk:
            results += predict_records(chunk, Predictor(weights_dir, segmenters=[member], check=False))
    return results


def run(args: argparse.Namespace) -> dict:
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
