"""How good the explanations are on a split: heat-map hit rates and flip TTA against the plain segmenter
(``brainseg explain``)."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from brainseg.config import pipeline_settings
from brainseg.data.index import SliceRecord, by_patient
from brainseg.evaluation.evaluate import Evaluated, report
from brainseg.explain.cam import SHIPPED_CAM, activation_maps
from brainseg.explain.tta import FLIPS, Augmentation, tta_predict_many
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import read_mask, read_slice
from brainseg.preprocess import brain_pixels


def peak_in_tumour(heat: np.ndarray, truth: np.ndarray) -> bool:
    """True when the heat map's highest pixel lies inside the true tumour mask."""
    return bool(truth.flat[int(np.argmax(heat))])


def cam_hit_rates(records: Sequence[SliceRecord], predictor: Predictor, gate: float,
                  maps: Sequence[tuple[str, str]] = (SHIPPED_CAM,), batch_size: int = 8) -> dict:
    """How often each map's peak (``(method, layer)`` of :func:`activation_maps`) falls inside the true
    tumour, over the tumour slices of ``records``.

    ``chance`` is what a uniformly random brain pixel would score (mean tumour share of the brain), the
    floor a map must beat to show it looks at the tumour at all; ``hit_rate_called`` counts only the
    slices whose classifier probability reaches ``gate``.

    Args:
        records: the slices to score; only their tumour slices count.
        predictor: the models whose classifier the maps explain.
        gate: classifier tumour probability at or above which a slice is called tumour.
        maps: the ``(method, layer)`` pairs to compare.
        batch_size: slices read, mapped and predicted together.

    Returns:
        The counts, ``chance`` and, per ``"method/layer"``, ``hit_rate`` and ``hit_rate_called``.
    """
    tumour = [r for r in records if r.tumour]
    names = [f"{method}/{layer}" for method, layer in maps]
    hits: dict[str, list[bool]] = {name: [] for name in names}
    chance, classified = [], []
    for start in range(0, len(tumour), batch_size):
        chunk = tumour[start:start + batch_size]
        images = [read_slice(r.image_path) for r in chunk]
        truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(chunk, images)]
        for name, (method, layer) in zip(names, maps):
            hits[name] += [peak_in_tumour(heat, truth)
                           for heat, truth in zip(activation_maps(predictor, images, method, layer), truths)]
        chance += [truth.sum() / max(int(brain_pixels(image).sum()), 1) for image, truth in zip(images, truths)]
        classified += [p.tumour_probability for p in predictor.predict_many(images, batch_size)]
    called = np.array(classified) >= gate

    def rates(name: str) -> dict[str, float]:
        found = np.array(hits[name], bool)
        return {"hit_rate": float(found.mean()) if len(found) else float("nan"),
                "hit_rate_called": float(found[called].mean()) if called.any() else float("nan")}

    return {
        "aggregation": "per slice, tumour slices only: share whose heat-map peak pixel lies inside the true mask",
        "target": "tumour logit minus no-tumour logit",
        "patients": len(by_patient(tumour)),
        "tumour_slices": len(tumour),
        "called_tumour_slices": int(called.sum()),
        "chance": float(np.mean(chance)) if len(tumour) else float("nan"),
        "shipped": "/".join(SHIPPED_CAM),
        "maps": {name: rates(name) for name in names},
    }


def compare_tta(records: Sequence[SliceRecord], predictor: Predictor, members: Sequence[Augmentation] = FLIPS,
                settings: dict | None = None, batch_size: int = 16) -> dict:
    """Plain model against TTA on the same slices: every metric of ``evaluate.report`` for both, plus
    seconds per slice (inference only, after a warm-up, reading excluded) and the headline deltas.

    Args:
        records: the slices to compare on, predicted one patient at a time.
        predictor: the models to run plain and under TTA.
        members: the TTA augmentations (the four flips by default).
        settings: the pipeline settings for ``evaluate.report``; ``None``: the shipped ones.
        batch_size: slices per batch, plain and TTA alike.

    Returns:
        The TTA members, device, precision and batch size, and under ``"plain"`` and ``"tta"`` the seconds per
        slice and headline metrics.
    """
    settings = settings or pipeline_settings()
    plain: list[Evaluated] = []
    augmented: list[Evaluated] = []
    seconds = {"plain": 0.0, "tta": 0.0}
    warm = read_slice(records[0].image_path)
    predictor.predict_many([warm])
    tta_predict_many(predictor, [warm], members)
    for patient_records in by_patient(records).values():
        images = [read_slice(r.image_path) for r in patient_records]
        truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(patient_records, images)]
        start = time.perf_counter()
        plain_predictions = predictor.predict_many(images, batch_size)
        seconds["plain"] += time.perf_counter() - start
        start = time.perf_counter()
        tta_predictions = [t.prediction() for t in tta_predict_many(predictor, images, members, batch_size)]
        seconds["tta"] += time.perf_counter() - start
        plain += [Evaluated(r, t, p) for r, t, p in zip(patient_records, truths, plain_predictions)]
        augmented += [Evaluated(r, t, p) for r, t, p in zip(patient_records, truths, tta_predictions)]
    result = {"members": [m.__dict__ for m in members], "device": str(predictor.device),
              "precision": predictor.precision, "batch_size": batch_size}
    for name, evaluated in (("plain", plain), ("tta", augmented)):
        full = report(evaluated, settings)
        result[name] = {
            "seconds_per_slice": seconds[name] / len(evaluated),
            "segmenter_volume_dice_mean": full["segmenter"]["volume"]["dice_mean"],
            "segmenter_volume_dice_median": full["segmenter"]["volume"]["dice_median"],
            "segmenter_tumour_tversky_pooled": full["segmenter"]["tumour_slices"]["tversky_pooled"],
            "segmenter_tumour_tversky_mean": full["segmenter"]["tumour_slices"]["tversky_mean"],
            "pipeline_volume_dice_mean": full["pipeline"]["volume"]["dice_mean"],
            "pipeline_tumour_tversky_pooled": full["pipeline"]["tumour_slices"]["tversky_pooled"],
            "per_patient_volume_dice": full["segmenter"]["volume"]["per_patient"],
        }
    result["aggregation"] = ("per-volume Dice: each patient's slices stacked, mean/median over patients; Tversky "
                             "pooled: TP/FN/FP summed over tumour slices; segmenter alone at the shipped threshold, "
                             "pipeline with the classifier gate and minimum area")
    return result
