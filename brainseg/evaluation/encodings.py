"""The same scan in the encodings scanners and pipelines write, and how the pipeline fares on each
(``brainseg encodings``): slices the input check flags and per-volume Dice, per encoding and patient."""
from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from brainseg import metrics
from brainseg.errors import BrainsegError
from brainseg.inference.predictor import Predictor, volume_masks
from brainseg.io.volumes import read_volume

AFFINE = np.array([[-0.94, 0, 0, 100.0], [0, -0.94, 0, 120.0], [0, 0, 3.3, -40.0], [0, 0, 0, 1]])
FLAIR = 1


def nifti(stored_xyz: np.ndarray) -> bytes:
    """A gzipped NIfTI of ``x, y, z[, channel]`` data with an axial LPS-like affine (3.3 mm slices)."""
    return gzip.compress(nib.Nifti1Image(stored_xyz, AFFINE).to_bytes(), compresslevel=1)


def to_xyz(volume: np.ndarray) -> np.ndarray:
    """``SxHxW[xC]`` slices as stored ``x (column), y (row), z (slice)[, channel]``, the reader's inverse."""
    return volume.transpose(2, 1, 0, *range(3, volume.ndim))


def mr_header(study: str, series: str, number: int, frame: str | None = None) -> pydicom.Dataset:
    """A new MR image's header (explicit VR little endian, a fresh SOP instance UID) in ``study`` and ``series``, its
    instance ``number`` and frame of reference; geometry and pixels are the caller's."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = study, series, "MR", number
    if frame:
        ds.FrameOfReferenceUID = frame
    return ds


def dicom_series(stored: np.ndarray, slope: float | Sequence[float] = 1.0, intercept: float = 0.0, bits: int = 12,
                 signed: bool = False, monochrome1: bool = False) -> bytes:
    """A zip of one axial DICOM series (one file a slice), as a scanner writes it.

    Args:
        stored: ``SxHxW`` integer values as stored in the files (before the rescale).
        slope: RescaleSlope (one for all slices, or one a slice): real value = stored x slope + intercept.
        intercept: RescaleIntercept.
        bits: BitsStored (in 16 bits allocated).
        signed: PixelRepresentation 1 (int16) instead of 0 (uint16).
        monochrome1: PhotometricInterpretation MONOCHROME1 (the minimum shown white).

    Returns:
        The zip's bytes.
    """
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    slopes = np.broadcast_to(np.asarray(slope, np.float64), (len(stored),))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, plane in enumerate(stored):
            ds = mr_header(study, series, index + 1, frame)
            ds.SeriesNumber, ds.SeriesDescription = 3, "AX FLAIR"
            ds.ImagePositionPatient = [-120.0, -120.0, 3.3 * index]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing, ds.SliceThickness = [0.94, 0.94], 3.3
            ds.Rows, ds.Columns = plane.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
            ds.PixelRepresentation = 1 if signed else 0
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slopes[index]:g}", f"{intercept:g}", "US"
            ds.PixelData = plane.astype(np.int16 if signed else np.uint16).tobytes()
            file = io.BytesIO()
            ds.save_as(file, enforce_file_format=True)
            archive.writestr(f"IM{index + 1:04d}.dcm", file.getvalue())
    return buffer.getvalue()


def encodings(images_u8: Sequence[np.ndarray]) -> dict[str, Callable[[], list[tuple[str, bytes]]]]:
    """The patient's scan as each encoding's upload, built when called: FLAIR alone in six storages, and the three
    sequences as a 4D int16 NIfTI (the dataset's order)."""
    volume = np.stack(images_u8)                     # SxHxWx3 uint8
    flair = volume[..., FLAIR]
    real = flair.astype(np.float64) / 255.0
    return {
        "FLAIR, uint8 NIfTI": lambda: [("flair.nii.gz", nifti(to_xyz(flair)))],
        "FLAIR, int16 NIfTI (x16 + 100)": lambda: [("flair.nii.gz", nifti(to_xyz(flair.astype(np.int16) * 16 + 100)))],
        "FLAIR, float32 NIfTI (x 3.7)": lambda: [("flair.nii.gz", nifti(to_xyz((real * 943.5).astype(np.float32))))],
        "FLAIR, float32 NIfTI (4000 x v^0.8)": lambda: [
            ("flair.nii.gz", nifti(to_xyz((4000 * real ** 0.8).astype(np.float32))))],
        "FLAIR, 12-bit DICOM (slope 0.5, intercept -20)": lambda: [
            ("flair.zip", dicom_series(flair.astype(np.uint16) * 16, slope=0.5, intercept=-20))],
        "three sequences, 4D uint8 NIfTI": lambda: [("scan.nii.gz", nifti(to_xyz(volume)))],
        "three sequences, 4D int16 NIfTI (x16)": lambda: [("scan.nii.gz", nifti(to_xyz(volume.astype(np.int16) * 16)))],
    }


BASELINES = ("FLAIR, uint8 NIfTI", "three sequences, 4D uint8 NIfTI")   # FLAIR alone; the three sequences


def baseline(encoding: str) -> str:
    """The 8-bit encoding an encoding is compared with: the same sequences as the dataset stores them."""
    return BASELINES[1] if encoding.startswith("three") else BASELINES[0]


def _change(patients: dict[str, float], reference: dict[str, float]) -> dict:
    changes = {p: dice - reference[p] for p, dice in patients.items()}
    worst = min(changes, key=changes.get)
    return {"dice_mean_change": float(np.mean(list(changes.values()))),
            "worst_patient": {"patient": worst, "dice_change": changes[worst]}}


def report(per_patient: dict[str, dict[str, tuple[int, int, float]]],
           reference: dict[str, dict[str, float]] | None = None) -> dict:
    """Per encoding over the patients: flagged share, mean per-volume Dice, and the mean and worst patient's Dice
    against the same patient's 8-bit baseline.

    Args:
        per_patient: ``{encoding: {patient: (flagged, slices, dice)}}``.
        reference: ``{8-bit encoding: {patient: dice}}`` from other models (those an issue's floors were set
            against); each row then also carries its change against them under ``vs_reference``.

    Returns:
        ``{encoding: {...}}`` with ``flagged``, ``slices``, ``flagged_share``, ``dice_mean``, ``dice_mean_change``
        and ``worst_patient`` (name and change), and ``vs_reference`` (the same two) with a reference.
    """
    result = {}
    for encoding, patients in per_patient.items():
        dice = {p: v[2] for p, v in patients.items()}
        own = {p: v[2] for p, v in per_patient[baseline(encoding)].items()}
        flagged, slices = sum(v[0] for v in patients.values()), sum(v[1] for v in patients.values())
        result[encoding] = {"compared_with": baseline(encoding), "patients": len(patients), "flagged": flagged,
                            "slices": slices, "flagged_share": flagged / slices,
                            "dice_mean": float(np.mean(list(dice.values()))), **_change(dice, own),
                            "per_patient": {p: {"flagged": v[0], "slices": v[1], "dice": v[2]}
                                            for p, v in patients.items()}}
        if reference is not None:
            result[encoding]["vs_reference"] = _change(dice, reference[baseline(encoding)])
    return result


def reference_dice(published: dict) -> dict[str, dict[str, float]]:
    """The 8-bit encodings' per-patient Dice to compare with: a ``brainseg encodings`` JSON's own ``reference``
    when it carries one, else its 8-bit rows."""
    if "reference" in published:
        return published["reference"]["per_patient"]
    rows = published["encodings"]
    return {name: {p: v["dice"] for p, v in rows[name]["per_patient"].items()} for name in BASELINES}


def load_reference(path: Path, patients: Sequence[str]) -> dict:
    """The 8-bit figures to compare with, from an earlier ``brainseg encodings`` JSON (:func:`reference_dice`):
    ``{"source": what they are, "per_patient": {8-bit encoding: {patient: dice}}}``; refused (``BrainsegError``,
    naming the file) when the file is not such a JSON or lacks one of ``patients``."""
    try:
        published = json.loads(Path(path).read_text())
        reference = {"source": published.get("reference", {}).get("source", str(path)),
                     "per_patient": reference_dice(published)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise BrainsegError(f"{path}: not a `brainseg encodings` JSON ({err})") from None
    missing = [p for p in patients for name in BASELINES if p not in reference["per_patient"].get(name, {})]
    if missing:
        raise BrainsegError(f"{path}: no 8-bit figure for {missing[0]} ({len(set(missing))} patients missing); give "
                            "a table of the same split")
    return reference


def score(predictor: Predictor, files: list[tuple[str, bytes]], truths: Sequence[np.ndarray],
          settings: dict) -> tuple[int, int, float]:
    """Read one upload, predict it: ``(flagged slices, slices, per-volume Dice)`` at the pipeline's settings.

    Args:
        predictor: the models.
        files: the upload's ``(name, bytes)``.
        truths: the patient's ``HxW bool`` masks, in slice order.
        settings: :func:`brainseg.config.pipeline_settings`.

    Returns:
        Flagged slices, slices read, and the per-volume Dice of the pipeline's masks.
    """
    scan = read_volume(files)
    predictions = predictor.predict_many(scan.images_u8, batch_size=scan.batch_size, scan=True)
    masks = volume_masks(predictions, settings["seg_threshold"], settings["gate"], int(settings["min_area"]),
                         bool(settings["largest_3d_component"]))
    flagged = sum(p.check is not None and p.check.flagged for p in predictions)
    counts = metrics.volume_counts(["patient"] * len(masks), masks, truths)["patient"]
    return flagged, len(predictions), metrics.dice(counts)
