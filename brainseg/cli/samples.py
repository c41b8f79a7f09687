"""``brainseg samples``: bundle test-split patients into samples/."""
from __future__ import annotations

import argparse
from pathlib import Path

from brainseg.errors import BrainsegError
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patients", nargs="+", help="test-split patients to bundle")
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--out", default=str(SAMPLES_DIR))


def run(args: argparse.Namespace) -> None:
    import shutil

    import numpy as np

    from brainseg.data.index import by_patient, index_dataset, load_split
    from brainseg.data.samples import write_compressed
    from brainseg.io.slices import read_mask, read_slice
    test = set(load_split(args.split_file)["test"])
    outside = sorted(set(args.patients) - test)
    if outside:
        raise BrainsegError(
            f"{args.split_file}: {', '.join(outside)} not in the test split; only test patients may be bundled"
        )
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
