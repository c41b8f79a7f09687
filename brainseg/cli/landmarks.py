"""``brainseg landmarks``: fit the intensity standard for non-8-bit scans on the training patients."""
from __future__ import annotations

import argparse

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"), help="its train patients are used")
    parser.add_argument("--out", default=str(WEIGHTS_DIR / "intensity.safetensors"))


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from brainseg.data.index import by_patient, index_dataset, load_split
    from brainseg.io.intensity import save
    from brainseg.models.weights import record_checksum
    from brainseg.training.landmarks import fit_landmarks
    train = load_split(args.split_file)["train"]
    patients = by_patient(index_dataset(args.data, patients=train, progress=True))
    landmarks = fit_landmarks(patients)
    out = Path(args.out)
    save(landmarks, out)
    record_checksum(out)
    print(f"wrote {out} ({len(patients)} training patients)")
    for name, rows in (("volume", landmarks.volume), ("slice", landmarks.slice)):
        for channel, row in zip(("pre-contrast", "FLAIR", "post-contrast"), rows):
            print(f"{name:6} {channel:13} " + " ".join(f"{v:6.1f}" for v in row))
