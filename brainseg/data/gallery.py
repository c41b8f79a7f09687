"""Where the gallery's slices come from and which ones to show first.

A full ``kaggle_3m`` folder when ``$BRAINSEG_DATA`` names one (or ``data/kaggle_3m`` exists), else the bundled
``samples/`` (a few test-split patients in the Kaggle layout), both read by
:func:`brainseg.data.index.index_dataset`.
"""
from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainseg import metrics
from brainseg.data.index import SliceRecord, by_patient, index_dataset, resolve_data_dir
from brainseg.errors import BrainsegError
from brainseg.paths import DATA_ENV, DEFAULT_DATA, REPOSITORY_DIR, SAMPLES_DIR


@dataclass(frozen=True)
class GallerySource:
    """The folder the gallery reads, and whether it is the full dataset or the bundled samples."""

    folder: Path
    bundled: bool
    note: str = ""   # why the bundled samples are used although a dataset folder was named

    @property
    def label(self) -> str:
        return "bundled sample patients (test split)" if self.bundled else f"dataset folder {self.folder}"


def locate(environ: Mapping[str, str] = os.environ) -> GallerySource:
    """``$BRAINSEG_DATA``, else ``data/kaggle_3m`` (from the working directory or the repo), else ``samples/``."""
    named = environ.get(DATA_ENV)
    if named:
        try:
            return GallerySource(resolve_data_dir(named), bundled=False)
        except BrainsegError as err:
            return GallerySource(SAMPLES_DIR, bundled=True, note=str(err))
    for candidate in (DEFAULT_DATA, REPOSITORY_DIR / DEFAULT_DATA):
        if candidate.is_dir():
            return GallerySource(resolve_data_dir(candidate), bundled=False)
    return GallerySource(SAMPLES_DIR, bundled=True)


def load_patients(folder: Path) -> dict[str, list[SliceRecord]]:
    """Every patient of a gallery folder, with its slices in order."""
    return by_patient(index_dataset(folder))


def telling_slice(records: Sequence[SliceRecord]) -> int:
    """The slice number with the most tumour pixels (the middle slice when there is none)."""
    best = max(records, key=lambda r: r.tumour_pixels)
    return best.number if best.tumour else records[len(records) // 2].number


def first_patient(patients: Mapping[str, Sequence[SliceRecord]]) -> str:
    """The patient with the largest single-slice tumour: the clearest opening view."""
    return max(sorted(patients), key=lambda p: max(r.tumour_pixels for r in patients[p]))


def neighbours(patients: Sequence[str], current: str) -> list[str]:
    """The patients a user visits next from ``current`` in the sorted list: the next one, then the previous."""
    ordered = sorted(patients)
    at = ordered.index(current)
    return [ordered[i] for i in (at + 1, at - 1) if 0 <= i < len(ordered) and i != at]


def visible_slices(numbers: Sequence[int], tumour: Sequence[bool], tumour_only: bool) -> list[int]:
    """Slice numbers the volume view steps through (tumour slices only when asked and when there are any).

    Args:
        numbers: every slice's number, in slice order.
        tumour: per slice, whether it has tumour.
        tumour_only: keep only the tumour slices.

    Returns:
        The visible slice numbers, in order.
    """
    with_tumour = [n for n, t in zip(numbers, tumour) if t]
    return with_tumour if tumour_only and with_tumour else list(numbers)


def nearest(numbers: Sequence[int], wanted: int) -> int:
    """The entry of ``numbers`` closest to ``wanted`` (the lower one on a tie)."""
    return min(numbers, key=lambda n: (abs(n - wanted), n))


def step(numbers: Sequence[int], current: int, offset: int) -> int:
    """The slice ``offset`` places from ``current`` in ``numbers``, clamped at both ends.

    Args:
        numbers: the slice numbers to step through, in order.
        current: the shown slice's number (the nearest entry of ``numbers`` when it is not one).
        offset: how many places to move; negative moves back.

    Returns:
        The slice number reached.
    """
    index = numbers.index(nearest(numbers, current))
    return numbers[min(max(index + offset, 0), len(numbers) - 1)]


def random_slice(numbers: Sequence[int], current: int, rng: random.Random) -> int:
    """Any other slice of ``numbers`` (``current`` only when it is the only one).

    Args:
        numbers: the slice numbers to choose from.
        current: the shown slice's number.
        rng: the random source that picks.

    Returns:
        The chosen slice number.
    """
    others = [n for n in numbers if n != current]
    return rng.choice(others) if others else current


def worst_slices(numbers: Sequence[int], truths: Sequence, masks: Sequence, count: int = 5) -> list[tuple[int, float]]:
    """The ``count`` lowest-Dice slices among those with tumour in the truth or the prediction.

    Args:
        numbers: every slice's number, in slice order.
        truths: per slice, the ``HxW bool`` true mask.
        masks: per slice, the pipeline's ``HxW bool`` mask.
        count: how many slices at most.

    Returns:
        ``(slice, Dice)`` pairs, lowest Dice first (then by slice number).
    """
    scored = [(n, metrics.dice(metrics.counts(m, t))) for n, t, m in zip(numbers, truths, masks) if t.any() or m.any()]
    return sorted(scored, key=lambda pair: (pair[1], pair[0]))[:count]


def patient_split(patient: str, split: Mapping[str, Sequence[str]]) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a patient of the split JSON, ``"none"`` when it is in none."""
    return next((name for name, patients in split.items() if patient in patients), "none")
