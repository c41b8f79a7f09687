"""The pipeline's mask rule: threshold, minimum region size, classifier gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainseg.data import SliceRecord
from brainseg.evaluate import Evaluated
from brainseg.inference import Prediction
from brainseg.tune import choose_gate, largest_region


def _probability() -> np.ndarray:
    """A 40-pixel tumour, a 3-pixel diagonal speck and one faint pixel below any threshold used here."""
    probability = np.zeros((32, 32), np.float32)
    probability[4:9, 4:12] = 0.9
    probability[20, 20] = probability[21, 21] = probability[22, 22] = 0.8
    probability[30, 2] = 0.2
    return probability


def test_regions_under_the_minimum_area_are_dropped_beside_a_kept_tumour() -> None:
    mask = Prediction(_probability(), tumour_probability=0.9).mask(threshold=0.5, gate=0.5, min_area=10)
    assert mask.sum() == 40 and mask[4:9, 4:12].all() and not mask[20:23, 20:23].any()


def test_a_diagonal_speck_is_one_region() -> None:
    mask = Prediction(_probability(), tumour_probability=0.9).mask(threshold=0.5, gate=0.5, min_area=3)
    assert mask.sum() == 43


def test_a_slice_with_only_specks_gets_an_empty_mask() -> None:
    probability = _probability()
    probability[4:9, 4:12] = 0.0
    assert not Prediction(probability, 0.9).mask(threshold=0.5, gate=0.5, min_area=10).any()
    assert Prediction(probability, 0.9).mask(threshold=0.5, gate=0.5, min_area=0).sum() == 3


@pytest.mark.parametrize("tumour_probability, gate, expected", [(0.49, 0.5, 0), (0.5, 0.5, 43), (0.9, 0.95, 0)])
def test_the_gate_empties_the_mask(tumour_probability: float, gate: float, expected: int) -> None:
    mask = Prediction(_probability(), tumour_probability).mask(threshold=0.5, gate=gate, min_area=0)
    assert mask.sum() == expected


@pytest.mark.parametrize("min_area", [0, 1, 3, 4, 40, 41])
def test_tuning_counts_a_slice_as_the_mask_does(min_area: int) -> None:
    """``tune`` decides from the largest region; it must agree with the mask the app and evaluation use."""
    probability = _probability()
    called_by_tune = largest_region(probability >= 0.5) >= max(min_area, 1)
    assert called_by_tune == Prediction(probability, 0.9).mask(0.5, 0.5, min_area).any()


def _evaluated(probability: np.ndarray, tumour_probability: float, tumour: bool, number: int) -> Evaluated:
    truth = np.zeros(probability.shape, bool)
    if tumour:
        truth[4:9, 4:12] = True
    record = SliceRecord("P", number, Path(f"P_{number}.tif"), Path(f"P_{number}_mask.tif"), int(truth.sum()))
    return Evaluated(record, truth, Prediction(probability, tumour_probability))


def test_tune_keeps_false_positives_under_the_cap_and_drops_specks_by_region() -> None:
    """Ten tumour slices (one 40-pixel region) and twenty tumour-free ones; on ten of the free slices the
    classifier is fooled and the segmenter finds eight 9-pixel specks, 72 pixels in all. A minimum region of 10
    to 40 pixels removes the specks and keeps the tumour; no minimum on total area could."""
    tumour = _probability()
    tumour[20:23, 20:23] = 0.0
    specks = np.zeros((32, 32), np.float32)
    for row in (16, 20, 24, 28):
        for col in (2, 20):
            specks[row:row + 3, col:col + 3] = 0.9
    results = ([_evaluated(tumour, 0.9, True, n) for n in range(10)]
               + [_evaluated(specks, 0.9, False, n) for n in range(10, 20)]
               + [_evaluated(np.zeros((32, 32), np.float32), 0.1, False, n) for n in range(20, 30)])
    chosen = choose_gate(results, threshold=0.5, max_fpr=0.03)
    assert chosen["sensitivity"] == 1.0 and chosen["false_positive_rate"] == 0.0
    assert 10 <= chosen["min_area"] <= 40


def test_tune_breaks_ties_by_the_pipelines_volume_dice() -> None:
    """Every minimum area up to 40 pixels finds all tumour slices without false positives; only those over
    9 pixels also drop the 9-pixel speck beside each tumour, which raises the per-volume Dice."""
    with_speck = _probability()
    with_speck[20:23, 20:23] = 0.8
    results = ([_evaluated(with_speck, 0.9, True, n) for n in range(10)]
               + [_evaluated(np.zeros((32, 32), np.float32), 0.1, False, n) for n in range(10, 30)])
    chosen = choose_gate(results, threshold=0.5, max_fpr=0.03)
    assert chosen["sensitivity"] == 1.0 and chosen["false_positive_rate"] == 0.0
    assert chosen["min_area"] in (10, 25) and chosen["volume_dice"] == pytest.approx(1.0)
