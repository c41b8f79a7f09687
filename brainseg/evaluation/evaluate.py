"""``brainseg evaluate``: every metric (per slice, pooled, per volume, detection) of the shipped weights on a
kaggle_3m folder.

Aggregations are named in the JSON: per slice (mean and median), pooled over tumour slices (the paper's),
per volume (all slices of a patient stacked), and per-slice detection (classifier alone, whole pipeline).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brainseg import metrics
from brainseg.data.index import SliceRecord, by_patient, index_dataset, load_split, select
from brainseg.inference.predictor import Prediction, Predictor, volume_masks
from brainseg.io.slices import read_mask, read_slice

CLASSIFIER_THRESHOLD = 0.5  # the classifier alone decides at even odds; the pipeline's gate is tuned separately




@dataclass(frozen=True)
class Evaluated:
    """One slice's truth and prediction."""

    record: SliceRecord
    truth: np.ndarray
    prediction: Prediction


def predict_records(records: Sequence[SliceRecord], predictor: Predictor, batch_size: int = 16,
                    progress: bool = True) -> list[Evaluated]:
    """Read, predict and pair every slice with its mask.

    Args:
        records: the slices to evaluate.
        predictor: the models to predict with.
        batch_size: slices read and predicted together.
        progress: show a progress bar over the slices.

    Returns:
        One :class:`Evaluated` per record, in their order.
    """
    results = []
    bar = tqdm(total=len(records), desc="evaluate", unit="slice", disable=not progress)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        images = [read_slice(r.image_path) for r in chunk]
        for record, image, prediction in zip(chunk, images, predictor.predict_many(images, batch_size)):
            results.append(Evaluated(record, read_mask(record.mask_path, shape=image.shape[:2]), prediction))
        bar.update(len(chunk))
    bar.close()
    return results


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values))} if len(values) else {}


def overlap_report(masks: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                   patients: Sequence[str] | None = None) -> dict:
    """Per-slice mean/median of each overlap metric, plus pooled Dice and Tversky, over the given slices.

    Args:
        masks: the predicted ``HxW bool`` masks.
        truths: the true ``HxW bool`` masks, one per mask.
        patients: one patient name per slice; with it, the pooled Tversky's 95% bootstrap interval over patients.

    Returns:
        ``slices``, ``<metric>_mean`` and ``<metric>_median`` per metric, ``dice_pooled``, ``tversky_pooled`` and,
        with ``patients``, ``tversky_pooled_interval_95``.
    """
    per_slice = [metrics.slice_overlap(m, t) for m, t in zip(masks, truths)]
    pooled = sum((metrics.counts(m, t) for m, t in zip(masks, truths)), metrics.Counts(0, 0, 0))
    report: dict = {"slices": len(per_slice)}
    for name in ("dice", "iou", "tversky", "precision", "recall"):
        summary = _summary([getattr(o, name) for o in per_slice])
        report[f"{name}_mean"], report[f"{name}_median"] = summary.get("mean"), summary.get("median")
    report["dice_pooled"], report["tversky_pooled"] = metrics.dice(pooled), metrics.tversky(pooled)
    if patients is not None:
        per_patient = metrics.volume_counts(patients, masks, truths)
        report["tversky_pooled_interval_95"] = metrics.bootstrap_interval(
            metrics.count_rows(list(per_patient.values())), metrics.resampled_pooled_tversky)
    return report


def volume_report(results: Sequence[Evaluated], masks: Sequence[np.ndarray]) -> dict:
    """Per-volume Dice: each patient's slices stacked into one volume; mean and median with their 95% bootstrap
    intervals over patients."""
    dices = metrics.volume_dice([r.record.patient for r in results], masks, [r.truth for r in results])
    values = list(dices.values())
    return {"patients": len(dices), **{f"dice_{k}": v for k, v in _summary(values).items()},
            "dice_mean_interval_95": metrics.bootstrap_interval(values, metrics.resampled_mean),
            "dice_median_interval_95": metrics.bootstrap_interval(values, metrics.resampled_median),
            "per_patient": dices}


def pipeline_masks(results: Sequence[Evaluated], settings: dict[str, float]) -> list[np.ndarray]:
    """The pipeline's mask of every slice, as the app shows it: per patient (slices in order) with
    ``largest_3d_component`` (:func:`brainseg.inference.predictor.volume_masks`)."""
    masks: list[np.ndarray] = [np.zeros(0)] * len(results)
    patients: dict[str, list[int]] = {}
    for i in sorted(range(len(results)), key=lambda i: results[i].record.number):
        patients.setdefault(results[i].record.patient, []).append(i)
    for rows in patients.values():
        found = volume_masks([results[i].prediction for i in rows], settings["seg_threshold"], settings["gate"],
                             int(settings["min_area"]), bool(settings.get("largest_3d_component", False)))
        for i, mask in zip(rows, found):
            masks[i] = mask
    return masks


def report(results: Sequence[Evaluated], settings: dict[str, float]) -> dict:
    """Every metric (per slice, pooled, per volume, detection) for segmenter alone and for the gated pipeline."""
    truths = [r.truth for r in results]
    patients = [r.record.patient for r in results]
    labels = np.array([r.truth.any() for r in results])
    seg_masks = [r.prediction.probability >= settings["seg_threshold"] for r in results]
    pipe_masks = pipeline_masks(results, settings)
    scores = np.array([r.prediction.tumour_probability for r in results])
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    tumour = np.flatnonzero(labels)
    areas = {p: [] for p in by_patient([r.record for r in results])}
    for result, mask in zip(results, pipe_masks):
        areas[result.record.patient].append([result.record.number, int(result.truth.sum()), int(mask.sum())])
    return {
        "patients": len({r.record.patient for r in results}),
        "slices": len(results),
        "tumour_slices": int(labels.sum()),
        "settings": settings,
        "segmenter": {
            "aggregation": "segmenter alone (threshold, no gate); per slice mean/median, pooled over slices, "
            "per volume",
            "tumour_slices": overlap_report(
                [seg_masks[i] for i in tumour], [truths[i] for i in tumour], [patients[i] for i in tumour]
            ),
            "all_slices": overlap_report(seg_masks, truths),
            "volume": volume_report(results, seg_masks),
        },
        "pipeline": {
            "aggregation": "classifier gate + segmenter + minimum area; a slice is called tumour when its mask "
            "is non-empty",
            "tumour_slices": overlap_report(
                [pipe_masks[i] for i in tumour], [truths[i] for i in tumour], [patients[i] for i in tumour]
            ),
            "all_slices": overlap_report(pipe_masks, truths),
            "volume": volume_report(results, pipe_masks),
            "detection": metrics.detection(np.array([m.any() for m in pipe_masks]), labels),
        },
        "classifier": {
            "aggregation": f"per slice, classifier alone: tumour probability >= {CLASSIFIER_THRESHOLD}",
            "detection": metrics.detection(scores >= CLASSIFIER_THRESHOLD, labels),
            "roc_auc": metrics.roc_auc(scores, labels),
            "roc": {
                "fpr": fpr.round(4).tolist(),
                "tpr": tpr.round(4).tolist(),
                "threshold": [None if not np.isfinite(t) else round(float(t), 4) for t in thresholds],
            },
        },
        "areas": {"columns": ["slice", "true_px", "predicted_px"], "per_patient": areas},
    }


def _with_interval(section: dict, name: str) -> str:
    low, high = section[f"{name}_interval_95"]
    return f"{section[name]:.4f} [{low:.3f}-{high:.3f}]"


def table(result: dict) -> str:
    """A short text table of the headline figures, each with its aggregation."""
    seg, pipe, cls = result["segmenter"], result["pipeline"], result["classifier"]
    rows = [
        ("patients / slices / tumour slices", f"{result['patients']} / {result['slices']} / {result['tumour_slices']}"),
        (
            "segmenter  per-volume Dice mean [95% CI] (median)",
            _with_interval(seg["volume"], "dice_mean") + f" ({seg['volume']['dice_median']:.4f})",
        ),
        ("segmenter  tumour slices Tversky pooled [95% CI]", _with_interval(seg["tumour_slices"], "tversky_pooled")),
        ("segmenter  tumour slices Tversky per-slice mean", f"{seg['tumour_slices']['tversky_mean']:.4f}"),
        ("segmenter  tumour slices Dice per-slice mean", f"{seg['tumour_slices']['dice_mean']:.4f}"),
        ("segmenter  all slices Dice per-slice mean", f"{seg['all_slices']['dice_mean']:.4f}"),
        (
            "pipeline   per-volume Dice mean [95% CI] (median)",
            _with_interval(pipe["volume"], "dice_mean") + f" ({pipe['volume']['dice_median']:.4f})",
        ),
        ("pipeline   tumour slices Tversky pooled [95% CI]", _with_interval(pipe["tumour_slices"], "tversky_pooled")),
        ("pipeline   all slices Dice per-slice mean", f"{pipe['all_slices']['dice_mean']:.4f}"),
        (
            "pipeline   sensitivity / false-positive rate",
            f"{pipe['detection']['sensitivity']:.4f} / {pipe['detection']['false_positive_rate']:.4f}",
        ),
        ("pipeline   accuracy", f"{pipe['detection']['accuracy']:.4f}"),
        ("classifier accuracy / ROC AUC", f"{cls['detection']['accuracy']:.4f} / {cls['roc_auc']:.4f}"),
        (
            "classifier sensitivity / specificity",
            f"{cls['detection']['sensitivity']:.4f} / {cls['detection']['specificity']:.4f}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def evaluation_records(data: str | None, split: str, split_file: str | Path, limit: int = 0) -> list[SliceRecord]:
    """The slices to evaluate: one part of the split JSON, or every patient of the folder.

    Args:
        data: the kaggle_3m folder, or ``None`` for ``$BRAINSEG_DATA``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every patient of the folder).
        split_file: the split JSON (not read for ``"all"``); its patients missing from the folder are skipped.
        limit: keep only the first ``limit`` patients by name; 0 keeps all.

    Returns:
        The chosen slices' records.
    """
    records = index_dataset(data)
    if split != "all":
        wanted = load_split(split_file)[split]
        present = {r.patient for r in records}
        records = select(records, [p for p in wanted if p in present])
    if limit:
        keep = sorted({r.patient for r in records})[:limit]
        records = select(records, keep)
    return records
