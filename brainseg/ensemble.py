"""``python -m brainseg ensemble``: the fold members together, on patients none of them trained on.

The members are folds 0, 1, ... in order (``train segmenter --folds 5 --fold K``). Every development patient is
in the training part of four of the five folds, so the only patients unseen by a set of members are the held-out
patients of the folds that have no member among them (while folds are still training) and the test split (the
final run, once: ``--split test``). On those patients, segmenter alone at ``--threshold`` (no gate):

- each member alone and the ensemble (mean of the members' probabilities): per-volume Dice mean and median and
  pooled tumour-slice Tversky, each with its 95% bootstrap interval over patients; the ensemble also with only its
  largest 3D connected component kept;
- which uncertainty marks the ensemble's wrong pixels: the AUROC of the members' spread (standard deviation) and
  of flip TTA's spread (the ensemble on four flips) for pixels whose mask is wrong, over the pixels within
  ``BAND_PX`` of the true or the predicted tumour (everything farther is empty and certain for both).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from brainseg import metrics
from brainseg.crossval import figures, patient_volumes
from brainseg.data import index_dataset, load_folds, load_split, select
from brainseg.errors import BrainsegError
from brainseg.explain import FLIPS, segment_members
from brainseg.inference import BATCH_SIZE, Predictor
from brainseg.weights import WEIGHTS_DIR

BAND_PX = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"), help="split JSON with 'folds'")
    parser.add_argument("--members", nargs="+", required=True,
                        help="segmenter weights of folds 0, 1, ... in fold order")
    parser.add_argument("--split", choices=("test",),
                        help="the final run on the test split (default: the held-out patients of the folds "
                             "without a member)")
    parser.add_argument("--threshold", type=float, default=0.5, help="segmentation threshold")
    parser.add_argument("--out", help="write the JSON here")


def unseen_patients(split_file: str | Path, members: int, split: str | None) -> list[str]:
    """The patients no member trained on: the ``split``'s, or the held-out patients of folds ``members`` on."""
    if split:
        return list(load_split(split_file)[split])
    held_out = load_folds(split_file)
    if held_out is None:
        raise BrainsegError(f"{split_file}: no 'folds'; run train segmenter --folds 5 --fold K first")
    if members >= len(held_out):
        raise BrainsegError(f"{members} members cover all {len(held_out)} folds: every development patient trained "
                            "one of them; pass --split test for the final run")
    return sorted(patient for fold in held_out[members:] for patient in fold)


def error_band(mask: np.ndarray, truth: np.ndarray, pixels: int = BAND_PX) -> np.ndarray:
    """``DxHxW bool``: the pixels within ``pixels`` (in-slice) of the true or the predicted tumour."""
    return ndimage.binary_dilation(mask | truth, structure=np.ones((1, 3, 3), bool), iterations=pixels)


def run(args: argparse.Namespace) -> dict:
    patients = unseen_patients(args.split_file, len(args.members), args.split)
    predictor = Predictor(segmenters=args.members, check=False)
    members: dict[str, np.ndarray] = {}     # patient: MxDxHxW member probabilities
    means: dict[str, np.ndarray] = {}       # patient: DxHxW their mean, the ensemble's probability
    truths: dict[str, np.ndarray] = {}
    scores: dict[str, list[np.ndarray]] = {"members' spread": [], "flip TTA spread": []}
    wrong: list[np.ndarray] = []
    for patient, images, truth in patient_volumes(select(index_dataset(args.data), patients), "patients"):
        own, flipped = [], []
        for start in range(0, len(images), BATCH_SIZE):
            batch = predictor.batch(images[start:start + BATCH_SIZE])
            own.append(predictor.engine.segment(batch))
            flipped.append(segment_members(predictor, torch.from_numpy(batch), FLIPS[1:]).numpy())  # no-flip: own
        probabilities = np.concatenate(own).transpose(1, 0, 2, 3)
        mean = probabilities.mean(axis=0)
        flips = np.concatenate([mean[None], np.concatenate(flipped, axis=1)])
        members[patient], means[patient], truths[patient] = probabilities, mean, truth
        mask = mean >= args.threshold
        band = error_band(mask, truth)
        wrong.append((mask != truth)[band])
        scores["members' spread"].append(probabilities.std(axis=0)[band])
        scores["flip TTA spread"].append(flips.std(axis=0)[band])
    errors = np.concatenate(wrong)
    ensemble = figures(means, truths, args.threshold)
    result = {
        "patients": patients,
        "which": f"the {args.split} split" if args.split else
                 f"the held-out patients of folds {len(args.members)}-{len(load_folds(args.split_file)) - 1}, "
                 "which no member trained on",
        "aggregation": "segmenter alone (no gate) at the threshold; per-volume Dice over patients, pooled Tversky "
                       "over tumour slices; 95% bootstrap over patients",
        "members": [{"member": Path(f).name, **_headline(figures({p: m[i] for p, m in members.items()}, truths,
                                                                   args.threshold))}
                    for i, f in enumerate(args.members)],
        "ensemble": ensemble,
        "ensemble_largest_3d_component": _headline(figures(means, truths, args.threshold, largest_3d=True)),
        "uncertainty_auroc_for_wrong_pixels": {name: metrics.roc_auc(np.concatenate(values), errors)
                                               for name, values in scores.items()},
        "uncertainty_pixels": {"counted": int(errors.size), "wrong": int(errors.sum()),
                               "where": f"within {BAND_PX} px (in-slice) of the true or predicted tumour"},
    }
    alone = ", ".join(f"{m['volume_dice_mean']:.3f}" for m in result["members"])
    print(f"{len(patients)} patients unseen by all {len(args.members)} members; per-volume Dice mean: members alone "
          f"{alone}; ensemble {ensemble['volume_dice_mean']:.3f} [{ensemble['volume_dice_mean_interval_95'][0]:.3f}-"
          f"{ensemble['volume_dice_mean_interval_95'][1]:.3f}]; uncertainty AUROC for wrong pixels: " +
          ", ".join(f"{k} {v:.3f}" for k, v in result["uncertainty_auroc_for_wrong_pixels"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _headline(section: dict) -> dict:
    """``figures`` without the per-patient table."""
    return {k: v for k, v in section.items() if k != "per_patient_volume_dice"}
