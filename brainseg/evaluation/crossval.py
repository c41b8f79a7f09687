"""``brainseg crossval``: out-of-fold figures of the fold members over the development patients.

Each patient is predicted by the member that never saw it, so the estimate spans all 80 train+val patients:
per-volume Dice and pooled Tversky with bootstrap intervals, the threshold, minimum region and 3D post-processing
chosen out of fold, and the shipped segmenter on the validation patients it never trained on.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from skimage.morphology import remove_small_objects
from tqdm import tqdm

from brainseg import metrics
from brainseg.data.index import SliceRecord, by_patient, index_dataset, load_folds, load_split, select
from brainseg.errors import BrainsegError
from brainseg.inference.postprocess import largest_component_3d
from brainseg.io.slices import read_mask, read_slice
from brainseg.models.weights import load_model
from brainseg.preprocess import preprocess

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 10, 25, 50, 75, 100, 150)




@torch.inference_mode()
def segmenter_probabilities(
    model: torch.nn.Module, images_u8: Sequence[np.ndarray], batch_size: int = 16
) -> np.ndarray:
    """Tumour probabilities of one segmenter (eager fp32, the reference precision).

    Args:
        model: one segmenter, on the CPU (its batches are CPU tensors).
        images_u8: ``HxWx3 uint8`` slices.
        batch_size: slices per forward pass.

    Returns:
        ``Nx256x256`` float32 probabilities, one per slice (``0x256x256`` for no slices).
    """
    out = []
    for start in range(0, len(images_u8), batch_size):
        batch = torch.from_numpy(np.stack([preprocess(i) for i in images_u8[start : start + batch_size]]))
        out.append(torch.sigmoid(model(batch))[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, 256, 256), np.float32)


def patient_masks(probabilities: np.ndarray, threshold: float, min_area: int, largest_3d: bool) -> np.ndarray:
    """One patient's masks: threshold, drop 2D regions under ``min_area``, optionally keep the largest 3D component.

    Args:
        probabilities: ``DxHxW`` segmenter probabilities of the patient's slices, in order.
        threshold: probability at or above which a pixel is tumour.
        min_area: 2D connected regions (8-connected) of fewer pixels than this are dropped.
        largest_3d: keep only the largest 3D connected component.

    Returns:
        ``DxHxW bool`` masks.
    """
    masks = probabilities >= threshold
    if min_area > 1:
        masks = np.stack([remove_small_objects(m, max_size=min_area - 1, connectivity=2) for m in masks])
    return largest_component_3d(masks) if largest_3d else masks


def overlaps(
    probabilities: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
    threshold: float,
    min_area: int,
    largest_3d: bool,
) -> tuple[dict[str, float], list[metrics.Counts]]:
    """Per-volume Dice per patient and each patient's pixel counts over its tumour slices.

    Args:
        probabilities: ``DxHxW`` segmenter probabilities, by patient.
        truths: ``DxHxW bool`` true masks, by patient.
        threshold: probability at or above which a pixel is tumour.
        min_area: 2D connected regions (8-connected) of fewer pixels than this are dropped.
        largest_3d: keep only each patient's largest 3D connected component.

    Returns:
        Per-volume Dice by patient, and one pixel-count row per patient over its true tumour slices.
    """
    dices, rows = {}, []
    for patient, probability in probabilities.items():
        masks, truth = patient_masks(probability, threshold, min_area, largest_3d), truths[patient]
        dices[patient] = metrics.dice(metrics.counts(masks, truth))
        tumour = truth.reshape(len(truth), -1).any(axis=1)
        rows.append(metrics.counts(masks[tumour], truth[tumour]))
    return dices, rows


def figures(
    probabilities: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
    threshold: float = 0.5,
    min_area: int = 0,
    largest_3d: bool = False,
) -> dict:
    """Per-volume Dice (mean, median) and pooled tumour-slice Tversky, each with a 95% interval over patients.

    Args:
        probabilities: ``DxHxW`` segmenter probabilities, by patient.
        truths: ``DxHxW bool`` true masks, by patient.
        threshold: probability at or above which a pixel is tumour.
        min_area: 2D connected regions (8-connected) of fewer pixels than this are dropped.
        largest_3d: keep only each patient's largest 3D connected component.

    Returns:
        The figures and the settings they were taken at, with ``per_patient_volume_dice``.
    """
    dices, rows = overlaps(probabilities, truths, threshold, min_area, largest_3d)
    values = np.array(list(dices.values()))
    return {
        "patients": len(dices),
        "threshold": threshold,
        "min_area": min_area,
        "largest_3d_component": largest_3d,
        "volume_dice_mean": float(values.mean()),
        "volume_dice_mean_interval_95": metrics.bootstrap_interval(values, metrics.resampled_mean),
        "volume_dice_median": float(np.median(values)),
        "volume_dice_median_interval_95": metrics.bootstrap_interval(values, metrics.resampled_median),
        "tumour_slices_tversky_pooled": metrics.tversky(sum(rows, metrics.Counts(0, 0, 0))),
        "tumour_slices_tversky_pooled_interval_95": metrics.bootstrap_interval(
            metrics.count_rows(rows), metrics.resampled_pooled_tversky
        ),
        "per_patient_volume_dice": dices,
    }


def patient_volumes(records: Sequence[SliceRecord], desc: str) -> Iterator[tuple[str, list[np.ndarray], np.ndarray]]:
    """Each patient's slices (in order) and true masks ``DxHxW``, one patient at a time, with a progress bar."""
    for patient, rows in tqdm(by_patient(records).items(), desc=desc, unit="patient"):
        images = [read_slice(r.image_path) for r in rows]
        yield patient, images, np.stack([read_mask(r.mask_path, shape=i.shape[:2]) for r, i in zip(rows, images)])


def predict_patients(
    model: torch.nn.Module, records: Sequence[SliceRecord], desc: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and true masks (``DxHxW``) per patient, slices in order.

    Args:
        model: one segmenter, on the CPU.
        records: the slices of the patients to predict.
        desc: the progress bar's label.

    Returns:
        ``DxHxW`` float32 probabilities and ``DxHxW bool`` true masks, each by patient.
    """
    probabilities, truths = {}, {}
    for patient, images, truth in patient_volumes(records, desc):
        probabilities[patient], truths[patient] = segmenter_probabilities(model, images), truth
    return probabilities, truths


def tune(probabilities: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> dict:
    """Threshold, minimum region and 3D post-processing with the best out-of-fold mean per-volume Dice (ties: the
    smaller minimum region)."""
    grid = [(t, a, kept) for t in THRESHOLDS for a in MIN_AREAS for kept in (False, True)]
    scored = [(float(np.mean(list(overlaps(probabilities, truths, t, a, kept)[0].values()))), -a, (t, a, kept))
              for t, a, kept in grid]
    threshold, min_area, largest = max(scored)[2]
    return {"threshold": threshold, "min_area": min_area, "largest_3d_component": largest}


def cross_validate(args: argparse.Namespace) -> dict:
    held_out = load_folds(args.split_file)
    if held_out is None:
        raise BrainsegError(f"{args.split_file}: no 'folds'; run train segmenter --folds 5 --fold K first")
    if len(args.members) > len(held_out):
        raise BrainsegError(f"{len(args.members)} members for {len(held_out)} folds")
    records = index_dataset(args.data)
    probabilities: dict[str, np.ndarray] = {}
    truths: dict[str, np.ndarray] = {}
    per_fold = []
    for fold, member in enumerate(args.members):
        model, _ = load_model(member)
        fold_probabilities, fold_truths = predict_patients(model, select(records, held_out[fold]), f"fold {fold}")
        probabilities.update(fold_probabilities)
        truths.update(fold_truths)
        per_fold.append(
            {
                "fold": fold,
                "member": Path(member).name,
                **{k: v for k, v in figures(fold_probabilities, fold_truths).items() if k != "per_patient_volume_dice"},
            }
        )
    validation = [p for p in load_split(args.split_file)["val"] if p in probabilities]
    reference, _ = load_model(args.reference)
    reference_probabilities, _ = predict_patients(reference, select(records, validation), "reference")
    chosen = tune(probabilities, truths)
    result = {
        "aggregation": "segmenter alone, out of fold: each patient predicted by the member that never saw it; "
        "per-volume Dice over patients, pooled Tversky over tumour slices; 95% bootstrap over patients",
        "folds_evaluated": len(args.members),
        "folds": len(held_out),
        "out_of_fold": figures(probabilities, truths),
        "out_of_fold_tuned": {
            "chosen_on": "these out-of-fold patients",
            **figures(
                probabilities,
                truths,
                **{
                    "threshold": chosen["threshold"],
                    "min_area": chosen["min_area"],
                    "largest_3d": chosen["largest_3d_component"],
                },
            ),
        },
        "out_of_fold_largest_3d_component": figures(probabilities, truths, largest_3d=True),
        "per_fold": per_fold,
        "fair_comparison": {
            "patients": validation,
            "why": "the shipped segmenter trained on the 70 train patients; only the validation patients are "
            "unseen by both",
            "members": figures({p: probabilities[p] for p in validation}, truths),
            "reference": figures(reference_probabilities, {p: truths[p] for p in validation}),
        }
        if validation
        else None,
    }
    summary = result["out_of_fold"]
    print(
        f"out of fold, {summary['patients']} patients ({len(args.members)} of {len(held_out)} folds), segmenter alone "
        f"at 0.5: per-volume Dice mean {summary['volume_dice_mean']:.4f} "
        f"[{summary['volume_dice_mean_interval_95'][0]:.3f}-{summary['volume_dice_mean_interval_95'][1]:.3f}], "
        f"median {summary['volume_dice_median']:.4f}; pooled tumour-slice Tversky "
        f"{summary['tumour_slices_tversky_pooled']:.4f} [{summary['tumour_slices_tversky_pooled_interval_95'][0]:.3f}-"
        f"{summary['tumour_slices_tversky_pooled_interval_95'][1]:.3f}]"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
