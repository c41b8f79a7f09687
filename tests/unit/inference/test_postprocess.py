"""Volume post-processing: the largest 3D connected tumour, and the pipeline's masks of a volume."""
from __future__ import annotations

import numpy as np

from brainseg.data.index import index_dataset
from brainseg.inference.postprocess import largest_component_3d
from brainseg.inference.predictor import Prediction, volume_masks
from brainseg.paths import SAMPLES_DIR


def test_largest_component_drops_the_smaller_3d_blob() -> None:
    volume = np.zeros((6, 20, 20), bool)
    volume[1:4, 2:8, 2:8] = True        # 108 voxels
    volume[4, 15:17, 15:17] = True      # 4 voxels, not touching
    kept = largest_component_3d(volume)
    assert kept.sum() == 108 and not kept[4, 15:17, 15:17].any()
    assert largest_component_3d(np.zeros((2, 4, 4), bool)).sum() == 0
    assert largest_component_3d([]).shape[0] == 0


def test_regions_touching_across_slices_diagonally_are_one_tumour() -> None:
    masks = [np.zeros((8, 8), bool) for _ in range(3)]
    masks[0][1:3, 1:3] = True
    masks[1][3, 3] = True               # touches slice 0's region only at a corner, one slice up
    masks[2][6:8, 6:8] = True           # 4 px, apart from both
    kept = largest_component_3d(masks)
    assert kept[0].sum() == 4 and kept[1].sum() == 1 and kept[2].sum() == 0


def _prediction(probability: np.ndarray) -> Prediction:
    return Prediction(probability.astype(np.float32), tumour_probability=0.9)


def test_volume_masks_keep_the_largest_tumour_only_when_asked() -> None:
    slices = [np.zeros((16, 16)) for _ in range(4)]
    for s in slices[:3]:
        s[2:8, 2:8] = 0.9               # one tumour over slices 0-2
    slices[3][12:15, 12:15] = 0.9       # a small region on slice 3, apart from it
    predictions = [_prediction(s) for s in slices]
    plain = volume_masks(predictions, 0.5, 0.5, 0)
    assert [int(m.sum()) for m in plain] == [36, 36, 36, 9]
    kept = volume_masks(predictions, 0.5, 0.5, 0, largest_3d=True)
    assert [int(m.sum()) for m in kept] == [36, 36, 36, 0]
    assert [int(m.sum()) for m in volume_masks(predictions, 0.5, 0.95, 0, largest_3d=True)] == [0, 0, 0, 0]


def test_slices_of_different_sizes_are_left_as_they_are() -> None:
    predictions = [_prediction(np.full((8, 8), 0.9)), _prediction(np.full((6, 6), 0.9))]
    assert [int(m.sum()) for m in volume_masks(predictions, 0.5, 0.5, 0, largest_3d=True)] == [64, 36]


def test_evaluate_scores_the_pipeline_as_volumes_are_shown() -> None:
    """``evaluate``'s pipeline masks with ``largest_3d_component``: each patient's volume masks, in slice order,
    whatever order the records come in."""
    from brainseg.config import pipeline_settings
    from brainseg.evaluation.evaluate import pipeline_masks, predict_records
    from brainseg.inference.predictor import Predictor

    records = index_dataset(SAMPLES_DIR)
    settings = {**pipeline_settings(), "largest_3d_component": True}
    results = predict_records(list(reversed(records)), Predictor(check=False), progress=False)
    masks = pipeline_masks(results, settings)
    for patient in {r.record.patient for r in results}:
        rows = sorted((i for i, r in enumerate(results) if r.record.patient == patient),
                      key=lambda i: results[i].record.number)
        expected = volume_masks([results[i].prediction for i in rows], settings["seg_threshold"], settings["gate"],
                                int(settings["min_area"]), largest_3d=True)
        assert all(np.array_equal(masks[i], e) for i, e in zip(rows, expected))
        plain = [results[i].prediction.mask(settings["seg_threshold"], settings["gate"], int(settings["min_area"]))
                 for i in rows]
        assert all(not (e & ~p).any() for e, p in zip(expected, plain))   # it only ever removes pixels
