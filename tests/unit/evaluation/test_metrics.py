"""Metrics on small hand-computed arrays: overlap with the empty-mask rule, pooling, the loss, ROC, detection."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainseg.metrics import (
    Counts,
    counts,
    detection,
    dice,
    focal_tversky_loss,
    iou,
    overlap,
    per_image_dice_loss,
    precision,
    recall,
    roc_auc,
    roc_curve,
    slice_overlap,
    soft_tversky,
    tversky,
)

# truth          prediction       -> tp 2, fp 2, fn 1
TRUTH = np.array([[1, 0, 0], [0, 1, 1]], bool)
PRED = np.array([[1, 1, 1], [0, 1, 0]], bool)
EMPTY = np.zeros((2, 3), bool)


def test_counts() -> None:
    assert counts(PRED, TRUTH) == Counts(tp=2, fp=2, fn=1)
    assert counts(PRED, TRUTH) + Counts(1, 0, 3) == Counts(3, 2, 4)
    with pytest.raises(ValueError, match="shape"):
        counts(PRED, TRUTH[:1])


def test_overlap_by_hand() -> None:
    result = slice_overlap(PRED, TRUTH)
    assert result.dice == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))             # 4/7
    assert result.iou == pytest.approx(2 / (2 + 2 + 1))                       # 2/5
    assert result.tversky == pytest.approx(2 / (2 + 0.7 * 1 + 0.3 * 2))       # alpha 0.7 weighs false negatives
    assert result.precision == pytest.approx(2 / 4)
    assert result.recall == pytest.approx(2 / 3)
    assert tversky(Counts(2, 2, 1), alpha=0.5) == pytest.approx(result.dice)   # alpha 0.5 is Dice


def test_both_empty_is_perfect() -> None:
    assert slice_overlap(EMPTY, EMPTY).as_dict() == {"dice": 1.0, "iou": 1.0, "tversky": 1.0,
                                                      "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize("pred, truth", [(PRED, EMPTY), (EMPTY, TRUTH)], ids=["false alarm", "missed tumour"])
def test_one_empty_is_zero(pred: np.ndarray, truth: np.ndarray) -> None:
    assert slice_overlap(pred, truth).as_dict() == {"dice": 0.0, "iou": 0.0, "tversky": 0.0,
                                                     "precision": 0.0, "recall": 0.0}


def test_pooled_differs_from_mean() -> None:
    """Slice A: Dice 4/7; slice B: one missed pixel, Dice 0. Mean 2/7; pooled (tp 2, fp 2, fn 2) 1/2."""
    missed = np.zeros((2, 3), bool)
    missed[0, 0] = True
    per_slice = [slice_overlap(PRED, TRUTH).dice, slice_overlap(EMPTY, missed).dice]
    assert np.mean(per_slice) == pytest.approx(2 / 7)
    pooled = counts(PRED, TRUTH) + counts(EMPTY, missed)
    assert pooled == Counts(2, 2, 2)
    assert dice(pooled) == pytest.approx(0.5)
    # a volume (slices stacked) pools the same pixels
    assert dice(counts(np.stack([PRED, EMPTY]), np.stack([TRUTH, missed]))) == pytest.approx(0.5)


def test_metric_functions_agree_with_overlap() -> None:
    c = Counts(5, 3, 2)
    assert overlap(c).as_dict() == {"dice": dice(c), "iou": iou(c), "tversky": tversky(c),
                                    "precision": precision(c), "recall": recall(c)}
    assert iou(c) == pytest.approx(dice(c) / (2 - dice(c)))


def test_focal_tversky_loss_by_hand() -> None:
    probability = torch.tensor([0.9, 0.2, 0.6, 0.0])
    target = torch.tensor([1.0, 0.0, 1.0, 1.0])
    tp, fn, fp = 0.9 + 0.6, 0.1 + 0.4 + 1.0, 0.2
    index = (tp + 1) / (tp + 0.7 * fn + 0.3 * fp + 1)          # smoothing 1, as the Keras original
    assert float(soft_tversky(probability, target)) == pytest.approx(index)
    assert float(focal_tversky_loss(probability, target)) == pytest.approx((1 - index) ** 0.75)


def test_focal_tversky_loss_pools_the_batch_and_has_gradients() -> None:
    probability = torch.tensor([[[0.9, 0.2]], [[0.6, 0.0]]], requires_grad=True)   # 2 images
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    loss = focal_tversky_loss(probability, target)
    assert loss.item() == pytest.approx(focal_tversky_loss(probability.detach().flatten(), target.flatten()).item())
    loss.backward()
    assert probability.grad is not None and float(probability.grad[1, 0, 1]) < 0   # raising a missed pixel helps
    perfect = torch.tensor([1.0, 0.0, 1.0])
    assert float(focal_tversky_loss(perfect, perfect)) == pytest.approx(0.0)



def test_per_image_dice_loss_weighs_each_tumour_alike_and_skips_empty_images() -> None:
    large = torch.zeros(1, 10, 10)
    large[0, :, :8] = 1                          # an 80-pixel tumour, found whole
    small = torch.zeros(1, 10, 10)
    small[0, 0, :2] = 1                          # a 2-pixel tumour, missed
    target = torch.stack([large, small, torch.zeros(1, 10, 10)])
    probability = torch.stack([large, torch.zeros(1, 10, 10), torch.full((1, 10, 10), 0.9)])
    expected = ((1 - 81 / 81) + (1 - 1 / 3)) / 2   # smooth 1: (2tp + 1) / (|p| + |t| + 1) per tumour image
    assert float(per_image_dice_loss(probability, target)) == pytest.approx(expected)
    assert float(focal_tversky_loss(probability[:2], target[:2])) < 0.1   # pooled, the missed tumour hardly counts
    assert float(per_image_dice_loss(probability[2:], target[2:])) == 0.0


# ---- detection ------------------------------------------------------------------------------------

SCORES = np.array([0.9, 0.8, 0.8, 0.3, 0.3, 0.1])
LABELS = np.array([1, 1, 0, 1, 0, 0], bool)


def test_roc_auc_with_ties() -> None:
    """9 positive/negative pairs: 0.9 beats 3; 0.8 beats 2 and ties 1; 0.3 beats 1 and ties 1 -> 7/9."""
    assert roc_auc(SCORES, LABELS) == pytest.approx(7 / 9)


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve(SCORES, LABELS)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    assert math.isinf(thresholds[0])
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.8, 0.3, 0.1])


def test_roc_auc_extremes() -> None:
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == pytest.approx(1.0)
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.0)
    assert roc_auc(np.full(4, 0.5), np.array([0, 1, 0, 1], bool)) == pytest.approx(0.5)
    assert math.isnan(roc_auc(np.array([0.2, 0.7]), np.array([1, 1], bool)))


def test_detection_counts() -> None:
    predicted = np.array([1, 1, 0, 0, 1], bool)
    labels = np.array([1, 0, 0, 1, 1], bool)
    result = detection(predicted, labels)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 1, 1)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    assert result["false_positive_rate"] == pytest.approx(1 / 2)
