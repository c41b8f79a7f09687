"""Predict files into a folder: mask and overlay PNGs and a CSV row per slice file; for a volume, its mask as NIfTI in
the input's grid (and a DICOM SEG for a DICOM series) and a row per slice (what ``brainseg predict`` runs).

Every slice goes through the input check and is reported, flagged or not; an unreadable input gets a row with its
error and the others go on.
"""
from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brainseg.check.assess import volume_sequence_warning
from brainseg.config import mask_settings
from brainseg.errors import BrainsegError
from brainseg.figures.charts import overlay
from brainseg.inference.predictor import Prediction, Predictor, volume_masks
from brainseg.io.slices import encode_png, read_slice_mapped
from brainseg.io.volumes import MAX_UPLOAD_BYTES, is_volume, mask_nifti, probability_nifti, read_volume, slice_geometry

CSV_NAME = "predictions.csv"
COLUMNS = ("file", "slice", "tumour_probability", "predicted_area_px", "check_score", "verdict", "reasons",
           "mask_png", "overlay_png", "mask_nifti", "intensity", "error")


@dataclass(frozen=True)
class PredictOptions:
    """How masks are made from a prediction (``weights/pipeline.json`` gives the defaults)."""

    threshold: float            # segmenter probability at or above which a pixel is tumour
    gate: float                 # classifier tumour probability below which a slice's mask is left empty
    min_area: int               # connected regions (8-connected) of fewer pixels than this are removed
    largest_3d: bool = False    # a volume's masks keep only its largest 3D tumour
    probabilities: bool = False  # also write the segmenter's raw probabilities as <stem>_probabilities.nii.gz

    def settings(self) -> dict[str, object]:
        """The mask settings under ``weights/pipeline.json``'s names (recorded in a DICOM SEG)."""
        return mask_settings(self.threshold, self.gate, self.min_area, self.largest_3d)


def output_stems(paths: Sequence[Path]) -> list[str]:
    """Each input's output stem (``scan.nii.gz`` -> ``scan``), made unique in order: ``scan``, ``scan_2``, ..."""
    stems, taken = [], set()
    for path in paths:
        base = Path(path.name.removesuffix(".gz").removesuffix(".nii")).stem
        stem, number = base, 2
        while stem in taken:
            stem, number = f"{base}_{number}", number + 1
        taken.add(stem)
        stems.append(stem)
    return stems


def result_row(path: Path, prediction: Prediction, mask: np.ndarray, mask_png: str = "", overlay_png: str = "",
               slice_number: int | str = "", mask_nifti_name: str = "", mapping: str = "") -> dict:
    """The CSV row of one predicted slice: its probability, mask area, input check and output file names.

    Args:
        path: the input file (or folder) the slice came from.
        prediction: the slice's prediction.
        mask: the pipeline's ``HxW bool`` mask of the slice.
        mask_png: the name of its mask PNG, ``""`` when none was written.
        overlay_png: the name of its overlay PNG, ``""`` when none was written.
        slice_number: the slice's number within a volume, ``""`` for a slice file.
        mask_nifti_name: the name of its volume's mask NIfTI, ``""`` for a slice file.
        mapping: how the input's values became 8-bit (:mod:`brainseg.io.intensity`).

    Returns:
        The row, keyed by ``COLUMNS`` (the check's cells blank without a check).
    """
    check = prediction.check
    return {"file": str(path), "slice": slice_number, "tumour_probability": round(prediction.tumour_probability, 4),
            "predicted_area_px": int(mask.sum()),
            "check_score": "" if check is None else round(check.score, 3),
            "verdict": "" if check is None else check.verdict,
            "reasons": "" if check is None else "; ".join(check.reasons),
            "mask_png": mask_png, "overlay_png": overlay_png, "mask_nifti": mask_nifti_name, "intensity": mapping,
            "error": ""}


def error_row(path: Path | str, message: str) -> dict:
    """The CSV row of an input that could not be predicted: its name and the error, every other cell blank."""
    return {**dict.fromkeys(COLUMNS, ""), "file": str(path), "error": message}


def read_input(path: Path) -> tuple[str, list[tuple[str, bytes]]]:
    """``("volume" or "slice", [(name, bytes)])`` of one argument: a folder is one upload (a DICOM series)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise BrainsegError(f"{path}: no such file, or an empty folder")
    if sum(f.stat().st_size for f in files) > MAX_UPLOAD_BYTES:
        raise BrainsegError(f"{path}: more than {MAX_UPLOAD_BYTES // 2**20:,} MB; expected one scan")
    named = [(f.name, f.read_bytes()) for f in files]
    return ("volume" if path.is_dir() or is_volume(named[0][1]) else "slice"), named


def predict_volume(predictor: Predictor, path: Path, files: list[tuple[str, bytes]], out: Path, stem: str,
                   options: PredictOptions) -> list[dict]:
    """Predict every slice of one volume, write ``<stem>_mask.nii.gz`` to ``out`` (and ``<stem>_seg.dcm`` for a
    DICOM series, ``<stem>_probabilities.nii.gz`` with ``options.probabilities``); one row per slice.

    Args:
        predictor: the models to predict with.
        path: the input file or folder, as named in the rows and warnings.
        files: the volume's ``(name, bytes)`` files.
        out: the output folder.
        stem: the output files' stem, unique among the outputs.
        options: how masks are made.

    Returns:
        One :func:`result_row` per slice, in slice order.
    """
    volume = read_volume(files)
    for note in volume.notes:      # what the reader chose or changed (a series of a study, the intensity mapping)
        tqdm.write(f"{path}: {note}", file=sys.stderr)
    predictions = predictor.predict_many(volume.images_u8, batch_size=volume.batch_size, scan=True)
    masks = volume_masks(predictions, options.threshold, options.gate, options.min_area, options.largest_3d)
    (out / f"{stem}_mask.nii.gz").write_bytes(mask_nifti(masks, volume.geometry))
    if options.probabilities:
        probabilities = probability_nifti([p.probability for p in predictions], volume.geometry)
        (out / f"{stem}_probabilities.nii.gz").write_bytes(probabilities)
    if volume.dicom_sources:
        from brainseg.io.dicom_seg import dicom_seg  # highdicom: half a second to import, for DICOM inputs only

        try:
            (out / f"{stem}_seg.dcm").write_bytes(dicom_seg(volume, masks, options.settings()))
        except BrainsegError as err:   # the NIfTI mask and the rows stand without it
            tqdm.write(f"{path}: no DICOM SEG written: {err}", file=sys.stderr)
    flagged = sum(p.check is not None and p.check.flagged for p in predictions)
    if flagged:
        tqdm.write(f"{path}: {flagged} of {len(predictions)} slices unlike the training data", file=sys.stderr)
    warning = volume_sequence_warning([p.check for p in predictions], volume.images_u8, predictor.input_check)
    if warning:
        tqdm.write(f"{path}: {warning}", file=sys.stderr)
    return [result_row(path, p, m, slice_number=n, mask_nifti_name=f"{stem}_mask.nii.gz", mapping=volume.intensity)
            for n, p, m in zip(volume.numbers, predictions, masks)]


def predict_path(predictor: Predictor, path: Path, out: Path, stem: str, options: PredictOptions) -> list[dict]:
    """Predict one input (a slice file, a volume file or a DICOM folder) and write its outputs to ``out``.

    Args:
        predictor: the models to predict with.
        path: the input; a folder is one DICOM series.
        out: the output folder (it must exist).
        stem: the stem of this input's output files (:func:`output_stems`).
        options: how masks are made.

    Returns:
        The input's CSV rows: one per slice, or one with its error when it cannot be read.
    """
    try:
        kind, named = read_input(path)
        if kind == "volume":
            return predict_volume(predictor, path, named, out, stem, options)
        image, mapping = read_slice_mapped(named[0][1], str(path))
    except BrainsegError as err:
        tqdm.write(f"error: {err}", file=sys.stderr)
        return [error_row(path, str(err))]
    prediction = predictor.predict(image)
    mask = prediction.mask(options.threshold, options.gate, options.min_area)
    (out / f"{stem}_mask.png").write_bytes(encode_png(mask))
    (out / f"{stem}_overlay.png").write_bytes(encode_png(overlay(image, mask, None)))
    if options.probabilities:   # a one-slice NIfTI, 1 mm a pixel (a slice file has no world frame)
        probabilities = probability_nifti([prediction.probability], slice_geometry(*prediction.probability.shape))
        (out / f"{stem}_probabilities.nii.gz").write_bytes(probabilities)
    if prediction.check is not None and prediction.check.flagged:
        tqdm.write(f"{path}: {prediction.check.verdict}: {'; '.join(prediction.check.reasons)}", file=sys.stderr)
    return [result_row(path, prediction, mask, f"{stem}_mask.png", f"{stem}_overlay.png", mapping=mapping)]


def predict_files(predictor: Predictor, files: list[Path], out: Path, options: PredictOptions) -> list[dict]:
    """Predict each input in turn and write its outputs to ``out`` (created if missing).

    Returns:
        The rows of every input, in the order given (:func:`predict_path`).
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, stem in zip(tqdm(files, desc="predict", unit="file"), output_stems(files)):
        rows.extend(predict_path(predictor, path, out, stem, options))
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


