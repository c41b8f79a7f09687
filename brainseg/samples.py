"""``python -m brainseg samples``: copy a few test-split patients into ``samples/``, losslessly compressed.

The bundled gallery of a fresh clone. Slices are re-encoded as deflate TIFF (pixels unchanged, read back by
``brainseg.io``), in the Kaggle layout ``samples/<patient>/<patient>_<n>.tif`` and ``_mask.tif``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg.data import by_patient, index_dataset, load_split
from brainseg.errors import BrainsegError
from brainseg.io import read_mask, read_slice
from brainseg.weights import WEIGHTS_DIR

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patients", nargs="+", help="test-split patients to bundle")
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--out", default=str(SAMPLES_DIR))


def write_compressed(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, compression="tiff_adobe_deflate")


def run(args: argparse.Namespace) -> None:
    test = set(load_split(args.split_file)["test"])
    outside = sorted(set(args.patients) - test)
    if outside:
        raise BrainsegError(f"{args.split_file}: {', '.join(outside)} not in the test split; only test patients may be bundled")
    out = Path(args.out)
    for patient, records in by_patient(index_dataset(args.data, patients=args.patients)).items():
        folder = out / patient
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for record in records:
            image = read_slice(record.image_path)
            write_compressed(image, folder / record.image_path.name)
            mask = read_mask(record.mask_path, shape=image.shape[:2]).astype(np.uint8) * 255
            write_compressed(mask, folder / record.mask_path.name)
    total = sum(f.stat().st_size for f in out.rglob("*.tif"))
    print(f"samples: {len(args.patients)} patients, {total / 2**20:.1f} MB in {out}")
