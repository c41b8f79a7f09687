"""``brainseg tune``: choose the pipeline's thresholds on the validation patients (never the test split).

The segmentation threshold maximises per-volume Dice; the gate and minimum region keep the false-positive rate on
tumour-free slices at or under ``--max-fpr`` with the highest sensitivity. With ``--members`` each validation
patient is segmented by the fold member that never trained on it.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.measure import label

from brainseg import metrics
from brainseg.data.index import SliceRecord, load_folds
from brainseg.errors import BrainsegError
from brainseg.evaluation.evaluate import Evaluated, pipeline_masks, predict_records, volume_report
from brainseg.inference.predictor import Predictor

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
GATES = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
MIN_AREAS = (0, 10, 25, 50, 75, 100, 150, 200, 300)




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
    """Mean per-volume Dice of the pipeline's masks at these settings.

    Args:
        results: the slices' truths and predictions.
        threshold: segmenter probability at or above which a pixel is tumour.
        gate: classifier tumour probability below which a slice's mask is left empty.
        min_area: connected regions (8-connected) of fewer pixels than this are removed.
        largest_3d: keep only each patient's largest 3D connected tumour.

    Returns:
        The mean over patients of the per-volume Dice.
    """
    settings = {"seg_threshold": threshold, "gate": gate, "min_area": min_area, "largest_3d_component": largest_3d}
    return volume_report(results, pipeline_masks(results, settings))["dice_mean"]


def choose_gate(results: Sequence[Evaluated], threshold: float, max_fpr: float,
                gates: Sequence[float] = GATES, largest_3d: bool = False) -> dict:
    """Gate and minimum area: highest sensitivity (then accuracy) with FPR <= max_fpr, else highest Youden's J;
    among settings that tie on those, the best pipeline per-volume Dice.

    Args:
        results: the validation slices' truths and predictions.
        threshold: the chosen segmentation threshold (probability at or above which a pixel is tumour).
        max_fpr: the largest false-positive rate on tumour-free slices allowed (a fraction, 0..1).
        gates: the classifier gates to try (each tried with every ``MIN_AREAS`` entry).
        largest_3d: keep only each patient's largest 3D tumour when scoring the Dice.

    Returns:
        The chosen ``gate`` and ``min_area`` with their detection figures and ``volume_dice``.
    """
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
    out (``members[k]`` for fold ``k``).

    Args:
        records: the slices to predict (those of patients in no fold are left out).
        weights_dir: the shipped weights folder (its classifier).
        members: the fold members' segmenter weights files, one per fold, in fold order.
        split_file: the split JSON holding the folds.

    Returns:
        The slices' truths and predictions, fold by fold.
    """
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


