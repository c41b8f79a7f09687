"""The app's cached inference: one Predictor per process, bounded caches of predictions, uploads in memory.

``st.cache_resource`` holds the models, shared by every session; ``st.cache_data`` holds gallery patients, uploads
and explanations, bounded in entries and time. Uploaded bytes are decoded in memory and never written to disk.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd  # at import, not lazily: plotly and Streamlit use pandas once any thread has begun importing it,

# so a first import in one session's script thread breaks another's chart half-way through
import plotly.graph_objects as go
import streamlit as st

from brainseg import measure, metrics
from brainseg.check.assess import FOREIGN, InputCheck, volume_sequence_warning
from brainseg.data.gallery import load_patients
from brainseg.data.index import SliceRecord, index_patient
from brainseg.errors import BrainsegError
from brainseg.figures import charts, report
from brainseg.inference.predictor import BATCH_SIZE, Prediction, Predictor, volume_masks
from brainseg.io import volumes
from brainseg.io.intensity import AS_STORED
from brainseg.io.slices import SUFFIXES, read_mask, read_slice, read_slice_mapped
from brainseg.paths import WEIGHTS_DIR

if TYPE_CHECKING:   # explain needs torch: imported when a visitor asks for an explanation
    from brainseg.explain.tta import TtaPrediction

METRICS_FILE = WEIGHTS_DIR / "metrics_test.json"
MASK_SUFFIX = "_mask"
CACHE_TTL_S = 3600
BACKGROUND_BATCH = 4   # the prefetch's batches: a visitor's own prediction waits for at most one of them


# ---- models and cached predictions ---------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the models (once per server)…")
def predictor() -> Predictor:
    """Both models on the best device, warmed up with one blank slice so the first real one is fast."""
    model = Predictor(WEIGHTS_DIR)
    model.predict(np.zeros((256, 256, 3), np.uint8))
    return model


def device_label(model: Predictor) -> str:
    """Where and how the models run, e.g. ``"CPU, OpenVINO bf16"``, ``"CPU, torch fp32"`` or
    ``"GPU (NVIDIA H100), torch bf16"``."""
    choice = model.engine.choice
    engine = {"openvino": "OpenVINO", "torch": "torch"}[choice.engine]
    if model.device_type == "cuda":
        import torch
        return f"GPU ({torch.cuda.get_device_name(model.device)}), {engine} {choice.precision}"
    return f"CPU, {engine} {choice.precision}"


@st.cache_data(show_spinner="Indexing the gallery…")
def gallery_patients(folder: str) -> dict[str, list[SliceRecord]]:
    """Patients of the gallery folder and their slices (indexed once per folder)."""
    return load_patients(Path(folder))


@dataclass(frozen=True)
class PatientSlices:
    """Every slice of one patient with its truth and prediction, in slice order."""

    numbers: list[int]
    images_u8: list[np.ndarray]        # HxWx3 uint8
    truths: list[np.ndarray]           # HxW bool (all empty when ``has_truth`` is False)
    predictions: list[Prediction]
    has_truth: bool = True             # False for an uploaded volume that came without a mask
    sequence_warning: str = ""         # what the check says of an uploaded volume's sequences (a sentence, or "")

    def index(self, number: int) -> int:
        return self.numbers.index(number)

    def masks(self, threshold: float, gate: float, min_area: int, largest_3d: bool = False) -> list[np.ndarray]:
        """The pipeline's ``HxW bool`` mask of every slice at these settings (:func:`volume_masks`).

        Args:
            threshold: segmenter probability at or above which a pixel is tumour.
            gate: classifier tumour probability below which a slice's mask is left empty.
            min_area: connected regions (8-connected) of fewer pixels than this are removed.
            largest_3d: keep only the largest 3D connected tumour of the stack (slices of one size).

        Returns:
            One ``HxW bool`` mask per slice, in slice order.
        """
        return volume_masks(self.predictions, threshold, gate, min_area, largest_3d)

    def summary(self, name: str, masks: Sequence[np.ndarray], spacing: Sequence[float] | None = None
                ) -> report.PatientSummary:
        """Per-slice areas and Dice of ``masks``, the predicted (and true) tumour measured (``spacing``: mm between
        slices, rows and columns; None when unknown, as for Kaggle folders: sizes then in voxels). Slices of
        different sizes (a gallery folder may hold them) are not a volume: they get no measurements."""
        found = true = None
        if len({np.shape(mask) for mask in masks}) == 1:
            midline = measure.head_midline(self.images_u8)
            found = measure.measure(masks, self.numbers, spacing, midline)
            true = measure.measure(self.truths, self.numbers, spacing, midline) if self.has_truth else None
        return report.patient_summary(name, self.numbers, masks, self.truths, self.has_truth, found, true)


@st.cache_data(max_entries=8, ttl=CACHE_TTL_S, show_spinner="Predicting every slice of this patient…")
def patient_slices(folder: str, patient: str, _background: bool = False) -> PatientSlices:
    """Read and predict all slices of ``folder/patient`` (cached per patient, at most 8 patients for an hour).

    Args:
        folder: the gallery folder, one subfolder per patient.
        patient: the patient's subfolder name.
        _background: (not part of the cache key) predict in small batches, each only while no visitor's own
            prediction runs.

    Returns:
        The patient's slices, truths and predictions, in slice order.
    """
    records = index_patient(Path(folder) / patient)
    images = [read_slice(r.image_path) for r in records]
    truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(records, images)]
    return PatientSlices([r.number for r in records], images, truths,
                         predictor().predict_many(images, batch_size=BACKGROUND_BATCH if _background else BATCH_SIZE,
                                                   background=_background))


@st.cache_resource
def _prefetcher() -> tuple[ThreadPoolExecutor, dict[tuple[str, str], Future]]:
    """One background worker shared by all sessions, and its tasks by (folder, patient)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainseg-prefetch"), {}


def prefetch(folder: str, patients: Sequence[str]) -> list[Future]:
    """Predict these gallery patients in the background, one at a time, into :func:`patient_slices`'s cache,
    so that visiting one next is a cache hit (a visit during its prediction waits for it, no second run).
    Queued tasks for other patients that have not started are dropped: the latest view decides what is next."""
    worker, tasks = _prefetcher()
    for key, task in list(tasks.items()):
        if key[1] not in patients and task.cancel():
            del tasks[key]
    futures = []
    for patient in patients:
        task = tasks.get((folder, patient))
        if task is None or task.done():
            task = tasks[folder, patient] = worker.submit(patient_slices, folder, patient, _background=True)
        futures.append(task)
    return futures


def volume_slices(scan: volumes.Volume) -> PatientSlices:
    """Every slice of an uploaded volume predicted, in the gallery patient's record (empty truths without a mask)."""
    truths = scan.truths or [np.zeros(image.shape[:2], bool) for image in scan.images_u8]
    predictions = predictor().predict_many(scan.images_u8, batch_size=scan.batch_size, scan=True)
    return PatientSlices(scan.numbers, scan.images_u8, truths, predictions, scan.truths is not None,
                         volume_sequence_warning([p.check for p in predictions], scan.images_u8,
                                                 predictor().input_check))


def upload_digest(files: Sequence[tuple[str, bytes]], masks: Sequence[tuple[str, bytes]] = (),
                  order: Sequence[str] = ()) -> str:
    """SHA-256 naming one volume upload (file names, bytes, the mask and the chosen channel order).

    Args:
        files: the scan's uploaded ``(name, bytes)`` files.
        masks: the uploaded mask scan's ``(name, bytes)`` files (none without a mask).
        order: the chosen channel order, as file names (pre-contrast, FLAIR, post-contrast); empty when not chosen.

    Returns:
        The digest as a hexadecimal string.
    """
    digest = hashlib.sha256()
    for name, data in [*files, *masks]:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update("\0".join(order).encode())
    return digest.hexdigest()


def channel_choice(names: Sequence[str]) -> tuple[list[str], str]:
    """Default channel order of three single-volume files (pre-contrast, FLAIR, post-contrast) by
    :func:`brainseg.io.volumes.channel_rule`, or their upload order and why when the names do not tell."""
    try:
        return list(volumes.channel_rule(names)), ""
    except BrainsegError as err:
        return list(names), f"{err}; taken in upload order"


def gallery_key(folder: str, patient: str, number: int) -> str:
    """What names a gallery slice in the explanation caches.

    Args:
        folder: the gallery folder.
        patient: the patient's name (its subfolder).
        number: the slice number.

    Returns:
        ``"<folder>/<patient>/<number>"``.
    """
    return f"{folder}/{patient}/{number}"


def patient_report(summary: report.PatientSummary, slices: PatientSlices, masks: Sequence[np.ndarray],
                   figures: Sequence[go.Figure], settings: dict[str, float], view: str) -> bytes:
    """The one-page HTML report of a gallery patient: its key slices as overlays, the figures and the per-slice table.

    Args:
        summary: the patient's per-slice summary (it picks the key slices).
        slices: the patient's slices, truths and predictions, in slice order.
        masks: the pipeline's ``HxW bool`` mask of each slice, in slice order.
        figures: the 3D view and the area profile, embedded interactive.
        settings: the pipeline settings; the numeric ones are listed in the report.
        view: how the key slices are shown: ``"composite"`` or ``"flair"`` (:func:`charts.display_image`).

    Returns:
        The HTML page, UTF-8 encoded.
    """
    overlays = {i: charts.overlay(charts.display_image(slices.images_u8[i], view), masks[i],
                                  slices.truths[i] if slices.has_truth else None)
                for i in report.key_slices(summary)}
    return report.html_report(summary, overlays, figures, settings).encode()


# ---- explanations ---------------------------------------------------------------------------------

@st.cache_data(max_entries=64, ttl=CACHE_TTL_S, show_spinner="LayerCAM: what raised the tumour score…")
def heat_map(key: str, _image_u8: np.ndarray) -> np.ndarray:
    """``HxW float32`` LayerCAM heat map (0..1) of one slice, cached by ``key`` (the image is not hashed)."""
    from brainseg import explain  # torch and timm: imported when a visitor first asks for a heat map
    return explain.activation_maps(predictor(), [_image_u8])[0]


@st.cache_data(max_entries=32, ttl=CACHE_TTL_S, show_spinner="Flip TTA: the segmenter on four flips…")
def tta(key: str, _image_u8: np.ndarray) -> TtaPrediction:
    """The segmenter on the four flips of one slice, mapped back (cached by ``key``; the image is not hashed)."""
    from brainseg import explain
    return explain.tta_predict_many(predictor(), [_image_u8])[0]


# ---- uploads --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UploadResult:
    """One uploaded slice: its pixels, optional mask and prediction, or the error that stopped it."""

    name: str
    mask_name: str | None = None
    key: str = ""                          # SHA-256 of the bytes: names the image in the explanation caches
    image_u8: np.ndarray | None = None     # HxWx3 uint8
    truth: np.ndarray | None = None        # HxW bool
    prediction: Prediction | None = None
    error: str | None = None
    intensity: str = ""                    # how its values became 8-bit (brainseg.io.intensity)


def is_mask_name(name: str) -> bool:
    return Path(name).stem.lower().endswith(MASK_SUFFIX)


def pair_uploads(files: Sequence[tuple[str, bytes]], masks: Sequence[tuple[str, bytes]] = ()
                 ) -> tuple[list[tuple[str, bytes, tuple[str, bytes] | None]], list[str]]:
    """Pair images with masks by the Kaggle naming (``x.tif`` + ``x_mask.tif``), from either list.

    A single image and a single unmatched separate mask are paired whatever their names. Returns
    ``[(name, data, (mask name, mask data) or None)]`` and the names of masks left without an image.
    """
    all_masks = [f for f in files if is_mask_name(f[0])] + list(masks)
    images = [f for f in files if not is_mask_name(f[0])]
    by_stem = {Path(name).stem.lower()[:-len(MASK_SUFFIX)]: (name, data)
               for name, data in all_masks if is_mask_name(name)}
    pairs, used = [], set()
    for name, data in images:
        mask = by_stem.get(Path(name).stem.lower())
        if mask:
            used.add(mask[0])
        pairs.append((name, data, mask))
    left = [m for m in all_masks if m[0] not in used]
    if len(pairs) == 1 and pairs[0][2] is None and len(left) == 1 and left[0] in list(masks):
        pairs[0] = (pairs[0][0], pairs[0][1], left.pop())
    return pairs, [name for name, _ in left]


@st.cache_data(max_entries=64, ttl=CACHE_TTL_S, show_spinner=False)
def predict_upload(data: bytes, name: str) -> tuple[np.ndarray, Prediction, str]:
    """Decode uploaded bytes in memory and predict (cached by content for an hour, 64 files at most); the third
    item says how the values became 8-bit."""
    image, mapping = read_slice_mapped(data, name)
    return image, predictor().predict(image), mapping


def analyse_upload(name: str, data: bytes, mask: tuple[str, bytes] | None) -> UploadResult:
    """Predict one upload; a file that cannot be read gives a result carrying the error message instead.

    Args:
        name: the uploaded file's name; its suffix must be one of ``SUFFIXES``.
        data: the file's bytes.
        mask: the paired mask's ``(name, bytes)``, or ``None`` without one.

    Returns:
        The slice's pixels, truth, prediction and SHA-256 key, or only its names and the error.
    """
    if Path(name).suffix.lower() not in SUFFIXES:
        return UploadResult(name, error=f"{name}: unsupported file type; expected {', '.join(SUFFIXES)}")
    try:
        image, prediction, mapping = predict_upload(data, name)
        truth = read_mask(mask[1], mask[0], shape=image.shape[:2]) if mask else None
    except BrainsegError as err:
        return UploadResult(name, mask[0] if mask else None, error=str(err))
    return UploadResult(name, mask[0] if mask else None, hashlib.sha256(data).hexdigest(), image, truth, prediction,
                        intensity=mapping)


# ---- what the page shows about a prediction ------------------------------------------------------

def slice_summary(prediction: Prediction, truth: np.ndarray | None, mask: np.ndarray) -> dict[str, float]:
    """Classifier probability, the area of the pipeline's ``mask`` and, with a truth, the overlap metrics of one
    slice.

    Args:
        prediction: the slice's prediction.
        truth: the ``HxW bool`` true mask, or ``None`` without one.
        mask: the pipeline's ``HxW bool`` mask of the slice.

    Returns:
        ``tumour_probability``, ``predicted_px``, ``predicted_share`` (fraction of the slice) and, with a truth,
        ``true_px`` and the :func:`metrics.slice_overlap` figures.
    """
    summary = {"tumour_probability": prediction.tumour_probability, "predicted_px": int(mask.sum()),
               "predicted_share": float(mask.mean())}
    if truth is not None:
        summary.update({"true_px": int(truth.sum()), **metrics.slice_overlap(mask, truth).as_dict()})
    return summary


def check_caution(check: InputCheck) -> str:
    """The warning above a flagged slice's panels (Markdown): that the prediction is unreliable, and why."""
    headline = ("**This image is unlike the training data: the prediction below is unreliable.**"
                if check.verdict == FOREIGN else
                "**This image differs from the training slices: the prediction below may be unreliable.**")
    reasons = "\n".join(f"- {reason}" for reason in check.reasons)
    return (f"{headline} The models only know axial brain MRI slices of low-grade glioma patients with three "
            f"sequences (pre-contrast, FLAIR, post-contrast) at 256x256; on anything else they still answer, "
            f"often confidently and wrongly. What the input check found:\n\n{reasons}")


ONE_SEQUENCE_NOTE = ("One MRI sequence (its three channels are identical), taken as FLAIR: the models were trained on "
                     "pre-contrast, FLAIR and post-contrast together, and on FLAIR alone where the dataset lacks the "
                     "other two. On a T1- or T2-weighted image alone their mask and tumour probability are "
                     "unreliable, and the input check does not judge the sequence of a single slice (an uploaded "
                     "volume's is judged as a whole).")


def check_label(check: InputCheck | None) -> str:
    """The batch table's check cell: the verdict and, when flagged, the first reason in short ("" without a check)."""
    if check is None:
        return ""
    if not check.flagged:
        return check.verdict
    short = re.split(r" \(|;|:", check.reasons[0])[0]
    more = f" (+{len(check.reasons) - 1} more)" if len(check.reasons) > 1 else ""
    return f"{check.verdict}: {short}{more}"


def batch_table(results: Sequence[UploadResult], threshold: float, gate: float, min_area: int) -> pd.DataFrame:
    """One row per uploaded file: status, input check, probability, area and, with a mask, Dice and IoU.

    Args:
        results: the uploads' results, one per file.
        threshold: segmenter probability at or above which a pixel is tumour.
        gate: classifier tumour probability below which a slice's mask is left empty.
        min_area: connected regions (8-connected) of fewer pixels than this are removed.

    Returns:
        The table, one row per result in their order.
    """
    rows = []
    for r in results:
        row: dict = {"file": r.name, "mask": r.mask_name or "", "status": "error" if r.error else "ok",
                     "check": check_label(r.prediction.check) if r.prediction else ""}
        if r.prediction is not None:
            s = slice_summary(r.prediction, r.truth, r.prediction.mask(threshold, gate, min_area))
            row.update({"tumour probability": round(s["tumour_probability"], 4), "predicted px": s["predicted_px"],
                        "tumour": "yes" if s["predicted_px"] else "no", "true px": s.get("true_px"),
                        "Dice": None if r.truth is None else round(s["dice"], 4),
                        "IoU": None if r.truth is None else round(s["iou"], 4)})
        row["intensity"] = "" if r.error else "8-bit, as stored" if r.intensity == AS_STORED else "standardised"
        row["message"] = r.error or ""
        rows.append(row)
    return pd.DataFrame(rows)


def csv_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


# ---- shipped JSON artefacts ----------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    """A JSON file's content, ``None`` when it does not exist; a malformed one raises BrainsegError."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BrainsegError(f"{path}: not valid JSON ({err})") from None


def load_test_metrics(path: Path = METRICS_FILE) -> dict | None:
    """The test-split report of ``python -m brainseg evaluate`` shipped in ``weights/``, if any."""
    return _read_json(path)


def load_history(kind: str, folder: Path = WEIGHTS_DIR) -> dict | None:
    """``weights/history_<kind>.json``, if any."""
    return _read_json(folder / f"history_{kind}.json")


def load_crossval(path: Path = WEIGHTS_DIR / "folds" / "crossval.json") -> dict | None:
    """The cross-validation members' out-of-fold figures (``python -m brainseg crossval``), if any."""
    return _read_json(path)


def load_member_histories(members: Sequence[Path]) -> dict[str, dict]:
    """Each ensemble member's ``<member>_history.json`` beside its weights, by member name (missing ones left
    out)."""
    found = {Path(m).stem: _read_json(Path(m).with_name(f"{Path(m).stem}_history.json")) for m in members}
    return {name: history for name, history in found.items() if history is not None}
