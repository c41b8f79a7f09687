"""Overlap metrics, the focal Tversky loss and detection metrics, defined once.

Empty-mask rule for every overlap metric: truth and prediction both empty = 1, exactly one empty = 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # the training losses take tensors, and use only their methods: no torch import here
    import torch

TVERSKY_ALPHA = 0.7   # weight of false negatives; false positives get 1 - alpha
FOCAL_GAMMA = 0.75


@dataclass(frozen=True)
class Counts:
    """Pixel counts of one comparison (a slice, a volume or a pooled set)."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def counts(pred: np.ndarray, truth: np.ndarray) -> Counts:
    """Pixel counts of boolean arrays of the same shape (any dimensionality)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    pred, truth = pred.astype(bool), truth.astype(bool)
    return Counts(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred & ~truth)),
                  int(np.count_nonzero(~pred & truth)))


def _ratio(numerator: float, denominator: float) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def dice(c: Counts) -> float:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Counts) -> float:
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def tversky(c: Counts, alpha: float = TVERSKY_ALPHA) -> float:
    return _ratio(c.tp, c.tp + alpha * c.fn + (1 - alpha) * c.fp)


def precision(c: Counts) -> float:
    """Both empty = 1; a prediction with no truth = 0; no prediction with truth = 0."""
    if c.tp + c.fp == 0:
        return 1.0 if c.fn == 0 else 0.0
    return c.tp / (c.tp + c.fp)


def recall(c: Counts) -> float:
    """Both empty = 1; truth with no prediction = 0; a prediction with no truth = 0."""
    if c.tp + c.fn == 0:
        return 1.0 if c.fp == 0 else 0.0
    return c.tp / (c.tp + c.fn)


@dataclass(frozen=True)
class Overlap:
    dice: float
    iou: float
    tversky: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def overlap(c: Counts) -> Overlap:
    """All overlap metrics of one set of counts."""
    return Overlap(dice(c), iou(c), tversky(c), precision(c), recall(c))


def slice_overlap(pred: np.ndarray, truth: np.ndarray) -> Overlap:
    return overlap(counts(pred, truth))


def volume_dice(patients: Sequence[str], preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-volume Dice: each patient's slices (given in any order, one patient name per slice) stacked.

    Args:
        patients: the patient of each slice.
        preds: the predicted ``HxW bool`` mask of each slice.
        truths: the true ``HxW bool`` mask of each slice.

    Returns:
        Dice by patient.
    """
    return {patient: dice(c) for patient, c in volume_counts(patients, preds, truths).items()}


def volume_counts(
    patients: Sequence[str], preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]
) -> dict[str, Counts]:
    """Pixel counts per patient: each patient's slices (one patient name per slice) summed.

    Args:
        patients: the patient of each slice.
        preds: the predicted ``HxW bool`` mask of each slice.
        truths: the true ``HxW bool`` mask of each slice.

    Returns:
        Summed counts by patient.
    """
    per_patient: dict[str, Counts] = {}
    for patient, pred, truth in zip(patients, preds, truths):
        per_patient[patient] = per_patient.get(patient, Counts(0, 0, 0)) + counts(pred, truth)
    return per_patient


BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(
    values: np.ndarray | Sequence[float],
    statistic,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> list[float]:
    """Percentile bootstrap interval over patients.

    Args:
        values: one row per patient (a value, or e.g. a ``(tp, fp, fn)`` row), resampled with replacement.
        statistic: maps a ``resamples x patients [x ...]`` array to one estimate per resample.
        resamples: how many resamples.
        seed: seed of the resampling.
        level: the interval's coverage (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``[low, high]``; two NaNs without values.
    """
    values = np.asarray(values, dtype=float)
    if not len(values):
        return [float("nan"), float("nan")]
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.percentile(statistic(values[draws]), [tail, 100 - tail])]


def resampled_mean(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1)


def resampled_median(samples: np.ndarray) -> np.ndarray:
    return np.median(samples, axis=1)


def resampled_pooled_tversky(samples: np.ndarray, alpha: float = TVERSKY_ALPHA) -> np.ndarray:
    """Pooled Tversky of each resample of per-patient ``(tp, fp, fn)`` rows (empty truth and prediction = 1)."""
    tp, fp, fn = samples.sum(axis=1).T
    denominator = tp + alpha * fn + (1 - alpha) * fp
    return np.where(denominator == 0, 1.0, tp / np.maximum(denominator, 1e-12))


def count_rows(per_patient: Sequence[Counts]) -> np.ndarray:
    """``patients x 3`` array of (tp, fp, fn), the rows :func:`resampled_pooled_tversky` resamples."""
    return np.array([[c.tp, c.fp, c.fn] for c in per_patient], dtype=float).reshape(-1, 3)


# ---- training loss (soft, differentiable) --------------------------------------------------------


def soft_tversky(
    probability: torch.Tensor, target: torch.Tensor, alpha: float = TVERSKY_ALPHA, smooth: float = 1.0
) -> torch.Tensor:
    """Tversky index of soft predictions, pooled over the whole batch (as the Keras original).

    Args:
        probability: predicted tumour probabilities, any shape.
        target: true masks (0/1), the same shape.
        alpha: weight of false negatives; false positives get ``1 - alpha``.
        smooth: added to numerator and denominator.

    Returns:
        Scalar tensor, the index (1 = perfect).
    """
    p, t = probability.float().flatten(), target.float().flatten()
    tp = (p * t).sum()
    fn = ((1 - p) * t).sum()
    fp = (p * (1 - t)).sum()
    return (tp + smooth) / (tp + alpha * fn + (1 - alpha) * fp + smooth)


def focal_tversky_loss(
    probability: torch.Tensor, target: torch.Tensor, alpha: float = TVERSKY_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """``(1 - TI) ** gamma`` over the batch.

    Args:
        probability: predicted tumour probabilities, any shape.
        target: true masks (0/1), the same shape.
        alpha: the Tversky index's weight of false negatives (:func:`soft_tversky`).
        gamma: the focal exponent.

    Returns:
        Scalar loss tensor.
    """
    return (1 - soft_tversky(probability, target, alpha)).clamp(min=0) ** gamma


def per_image_dice_loss(probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean ``1 - soft Dice`` over the images of the batch that hold tumour (0 when none does).

    Unlike the pooled losses, every tumour counts the same however small it is, as in per-volume Dice.

    Args:
        probability: ``Bx...`` predicted tumour probabilities, one image per row of the first axis.
        target: ``Bx...`` true masks (0/1), the same shape.
        smooth: added to the Dice's numerator and denominator.

    Returns:
        Scalar loss tensor.
    """
    p, t = probability.float().flatten(1), target.float().flatten(1)
    tumour = t.sum(1) > 0
    if not tumour.any():
        return p.sum() * 0
    p, t = p[tumour], t[tumour]
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


# ---- detection ----------------------------------------------------------------------------------


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, from the highest score down."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(labels)[distinct]
    fps = np.cumsum(~labels)[distinct]
    positives, negatives = max(labels.sum(), 1), max((~labels).sum(), 1)
    return (np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives], np.r_[np.inf, scores[distinct]])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def detection(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, FPR and counts of boolean per-slice decisions."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    tp = int(np.sum(predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    n = max(len(labels), 1)
    return {
        "accuracy": (tp + tn) / n,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "false_positive_rate": fp / max(tn + fp, 1),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }
