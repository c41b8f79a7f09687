"""Index a ``kaggle_3m`` folder and split it by patient (and into folds).

``kaggle_3m/<patient>/<patient>_<n>.tif`` + ``<patient>_<n>_mask.tif`` -> :class:`SliceRecord` list ->
patient-level split (JSON); the training tensors are :mod:`brainseg.data.dataset`'s.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from brainseg.errors import BrainsegError
from brainseg.io.slices import read_mask
from brainseg.paths import DATA_ENV

SPLITS = ("train", "val", "test")
KAGGLE_HINT = ("get the Kaggle 'LGG MRI Segmentation' dataset (kaggle_3m folder) and pass its path with --data "
               f"or the {DATA_ENV} environment variable")


@dataclass(frozen=True)
class SliceRecord:
    """One slice of the index: where its files are and whether its mask has tumour pixels."""

    patient: str
    number: int
    image_path: Path
    mask_path: Path
    tumour_pixels: int

    @property
    def tumour(self) -> bool:
        return self.tumour_pixels > 0

    @property
    def name(self) -> str:
        return self.image_path.name


def resolve_data_dir(folder: str | Path | None = None) -> Path:
    """The kaggle_3m folder from the argument, else ``$BRAINSEG_DATA``; accepts its parent too."""
    chosen = folder if folder else os.environ.get(DATA_ENV)
    if not chosen:
        raise BrainsegError(f"no dataset folder given: {KAGGLE_HINT}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise BrainsegError(f"{path}: dataset folder does not exist; {KAGGLE_HINT}")
    if (path / "kaggle_3m").is_dir():
        path = path / "kaggle_3m"
    return path


def _slice_number(stem: str, folder: Path) -> int:
    try:
        return int(stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise BrainsegError(f"{folder / stem}.tif: expected a name like <patient>_<n>.tif") from None


def index_patient(folder: Path) -> list[SliceRecord]:
    """The slices of one patient folder, in natural slice order, with their tumour pixel counts."""
    stems = [p.stem for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.stem.endswith("_mask")]
    records = []
    for stem in sorted(stems, key=lambda s: _slice_number(s, folder)):
        image_path = next(folder / f"{stem}{ext}" for ext in (".tif", ".tiff") if (folder / f"{stem}{ext}").exists())
        mask_path = next((folder / f"{stem}_mask{ext}" for ext in (".tif", ".tiff")
                          if (folder / f"{stem}_mask{ext}").exists()), None)
        if mask_path is None:
            raise BrainsegError(f"{image_path}: no mask beside it; expected {stem}_mask.tif")
        records.append(SliceRecord(folder.name, _slice_number(stem, folder), image_path, mask_path,
                                   int(read_mask(mask_path).sum())))
    return records


def index_dataset(folder: str | Path | None = None, patients: Sequence[str] | None = None,
                  progress: bool = False) -> list[SliceRecord]:
    """Every slice of a kaggle_3m folder (or of the named patients), sorted by patient then slice.

    Args:
        folder: the kaggle_3m folder or its parent; ``None``: ``$BRAINSEG_DATA`` (:func:`resolve_data_dir`).
        patients: the patients (subfolder names) to index, all of them when ``None``; each must be in the folder.
        progress: show a progress bar over the patients.

    Returns:
        The slices' records.
    """
    root = resolve_data_dir(folder)
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if patients is not None:
        missing = sorted(set(patients) - set(available))
        if missing:
            raise BrainsegError(f"{root}: patients {', '.join(missing[:3])} are not in this folder")
        available = [p for p in available if p in set(patients)]
    records = []
    for patient in tqdm(available, desc="index", disable=not progress, unit="patient"):
        records.extend(index_patient(root / patient))
    if not records:
        raise BrainsegError(f"{root}: no slices found; expected <patient>/<patient>_<n>.tif files; {KAGGLE_HINT}")
    return records


def by_patient(records: Sequence[SliceRecord]) -> dict[str, list[SliceRecord]]:
    """Records grouped by patient, in slice order."""
    grouped: dict[str, list[SliceRecord]] = {}
    for record in records:
        grouped.setdefault(record.patient, []).append(record)
    return grouped


# ---- patient-level split ------------------------------------------------------------------------

def make_split(records: Sequence[SliceRecord], seed: int = 0,
               fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """Deterministic patient-level split, stratified by tumour burden (share of tumour slices).

    Patients are sorted by burden and dealt, block by block, into train/val/test in the given proportions,
    so every part spans small and large tumours and holds tumour slices.

    Args:
        records: every slice of the patients to split.
        seed: seed of the shuffle within each block.
        fractions: the train, val and test shares of the patients.

    Returns:
        The patients of ``"train"``, ``"val"`` and ``"test"``, each sorted.
    """
    grouped = by_patient(records)
    burden = {p: sum(r.tumour for r in rs) / len(rs) for p, rs in grouped.items()}
    ordered = sorted(grouped, key=lambda p: (burden[p], p))
    block = max(round(1 / min(f for f in fractions if f > 0)), 1)
    quota = [round(f * block) for f in fractions]
    rng = random.Random(seed)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for start in range(0, len(ordered), block):
        labels = [name for name, q in zip(SPLITS, quota) for _ in range(q)]
        rng.shuffle(labels)
        for patient, label in zip(ordered[start:start + block], labels):
            split[label].append(patient)
    for name in SPLITS:
        split[name].sort()
        if fractions[SPLITS.index(name)] > 0 and not any(
                r.tumour for p in split[name] for r in grouped[p]):
            raise BrainsegError(f"split {name!r} has no tumour slices; use more patients")
    return split


def make_folds(records: Sequence[SliceRecord], patients: Sequence[str], folds: int = 5,
               seed: int = 0) -> list[list[str]]:
    """Deterministic patient-level folds over ``patients``, stratified by tumour burden like :func:`make_split`.

    Patients are sorted by share of tumour slices and dealt, ``folds`` at a time in shuffled order, so every
    fold spans small and large tumours.

    Args:
        records: slice records covering at least ``patients``.
        patients: the patients to deal into folds; each must be in ``records``.
        folds: how many folds (at least 2, and no more than the patients).
        seed: seed of the shuffle within each group of ``folds`` patients.

    Returns:
        The held-out patients of each fold, sorted.
    """
    if folds < 2:
        raise BrainsegError(f"--folds must be at least 2, got {folds}")
    grouped = {p: rs for p, rs in by_patient(records).items() if p in set(patients)}
    missing = sorted(set(patients) - set(grouped))
    if missing:
        raise BrainsegError(f"patients of the split not in the data: {', '.join(missing[:5])}")
    if len(grouped) < folds:
        raise BrainsegError(f"{len(grouped)} patients cannot make {folds} folds")
    burden = {p: sum(r.tumour for r in rs) / len(rs) for p, rs in grouped.items()}
    ordered = sorted(grouped, key=lambda p: (burden[p], p))
    rng = random.Random(seed)
    held_out: list[list[str]] = [[] for _ in range(folds)]
    for start in range(0, len(ordered), folds):
        labels = list(range(folds))
        rng.shuffle(labels)
        for patient, fold in zip(ordered[start:start + folds], labels):
            held_out[fold].append(patient)
    return [sorted(fold) for fold in held_out]


def fold_split(split: dict[str, list[str]], held_out: Sequence[Sequence[str]], fold: int) -> dict[str, list[str]]:
    """The train/val/test split of one fold: val = that fold's held-out patients, train = the other
    development patients, test untouched.

    Args:
        split: the patient-level split (``"train"``, ``"val"``, ``"test"``); train + val are the development patients.
        held_out: the held-out patients of each fold (:func:`make_folds`).
        fold: which fold, ``0 .. len(held_out) - 1``.

    Returns:
        The fold's ``"train"``, ``"val"`` and ``"test"`` patients.
    """
    if not 0 <= fold < len(held_out):
        raise BrainsegError(f"--fold must be in 0..{len(held_out) - 1}, got {fold}")
    val = sorted(held_out[fold])
    development = set(split["train"]) | set(split["val"])
    return {"train": sorted(development - set(val)), "val": val, "test": list(split["test"])}


def save_folds(path: str | Path, held_out: Sequence[Sequence[str]], seed: int) -> None:
    """Add (or replace) the ``folds`` entry of a split file, keeping the rest as it is.

    Args:
        path: the split JSON file, which must exist.
        held_out: the held-out patients of each fold.
        seed: the seed the folds were made with, recorded beside them.
    """
    path = Path(path)
    payload = json.loads(path.read_text())
    payload["folds"] = {"method": "patient-level over train+val, stratified by share of tumour slices",
                        "seed": seed, "held_out": [list(f) for f in held_out]}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def load_folds(path: str | Path) -> list[list[str]] | None:
    """The held-out patients of each fold from a split file, or None when it has no folds."""
    payload = json.loads(Path(path).read_text())
    folds = payload.get("folds")
    return [list(f) for f in folds["held_out"]] if folds else None


def save_split(split: dict[str, list[str]], path: str | Path, seed: int) -> None:
    """Write a split JSON: its method, seed and the ``"train"``, ``"val"`` and ``"test"`` patients.

    Args:
        split: the patients of each split (:func:`make_split`).
        path: the JSON file to write (replaced if it exists).
        seed: the seed the split was made with, recorded in the file.
    """
    payload = {"method": "patient-level, stratified by share of tumour slices", "seed": seed,
               **{name: split[name] for name in SPLITS}}
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split JSON; a missing or malformed file raises BrainsegError."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        return {name: list(payload[name]) for name in SPLITS}
    except FileNotFoundError:
        raise BrainsegError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BrainsegError(f"{path}: expected a JSON object with lists 'train', 'val' and 'test'") from None


def select(records: Sequence[SliceRecord], patients: Sequence[str]) -> list[SliceRecord]:
    wanted = set(patients)
    return [r for r in records if r.patient in wanted]
