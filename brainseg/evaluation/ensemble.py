"""``brainseg ensemble``: the fold members together, on patients none of them trained on.

Scored only on patients outside the development split (``--patients test`` or ``unlisted``): each member and their
mean, per-volume Dice and pooled Tversky with bootstrap intervals, and which uncertainty (members' spread or flip
TTA) marks the wrong pixels (AUROC near the tumour).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from brainseg import metrics
from brainseg.data.index import index_dataset, load_split, select
from brainseg.errors import BrainsegError
from brainseg.evaluation.crossval import figures, patient_volumes
from brainseg.explain.tta import FLIPS, segment_members
from brainseg.inference.predictor import BATCH_SIZE, Predictor

BAND_PX = 16




def unseen_patients(split_file: str | Path, which: str, available: Sequence[str]) -> list[str]:
    """The patients of ``available`` that no member trained on: the split file's ``test`` patients, or
    (``unlisted``) those the split file does not name in any part.

    Args:
        split_file: the split JSON the members were trained with.
        which: ``"test"`` or ``"unlisted"`` (any other value counts as unlisted).
        available: the patients in the data folder.

    Returns:
        The chosen patients, sorted (at least one, else BrainsegError).
    """
    split = load_split(split_file)
    listed = {patient for part in ("train", "val", "test") for patient in split[part]}
    chosen = sorted(set(available) & set(split["test"]) if which == "test" else set(available) - listed)
    if not chosen:
        raise BrainsegError(f"the data folder has no {'test' if which == 'test' else 'unlisted'} patient of "
                            f"{split_file}: no patient there is unseen by all members")
    return chosen


def error_band(mask: np.ndarray, truth: np.ndarray, pixels: int = BAND_PX) -> np.ndarray:
    """The pixels within ``pixels`` (in-slice) of the true or the predicted tumour.

    Args:
        mask: ``DxHxW bool`` predicted mask.
        truth: ``DxHxW bool`` true mask.
        pixels: the band's width in pixels, within each slice.

    Returns:
        ``DxHxW bool`` band.
    """
    return ndimage.binary_dilation(mask | truth, structure=np.ones((1, 3, 3), bool), iterations=pixels)




def _headline(section: dict) -> dict:
    """``figures`` without the per-patient table."""
    return {k: v for k, v in section.items() if k != "per_patient_volume_dice"}


def compare_ensemble(args: argparse.Namespace) -> dict:
    records = index_dataset(args.data)
    patients = unseen_patients(args.split_file, args.patients, sorted({r.patient for r in records}))
    predictor = Predictor(segmenters=args.members, check=False)
    members: dict[str, np.ndarray] = {}     # patient: MxDxHxW member probabilities
    means: dict[str, np.ndarray] = {}       # patient: DxHxW their mean, the ensemble's probability
    truths: dict[str, np.ndarray] = {}
    scores: dict[str, list[np.ndarray]] = {"members' spread": [], "flip TTA spread": []}
    wrong: list[np.ndarray] = []
    for patient, images, truth in patient_volumes(select(records, patients), "patients"):
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
        "which": "the test split" if args.patients == "test" else
                 f"the patients of the data folder that {Path(args.split_file).name} does not name",
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
