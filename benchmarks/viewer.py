"""Seconds from an uploaded 60-slice scan to the volume viewer, as the app runs it (target: 5 s on the 2-core CPU):
**read** (``read_volume`` of a three-sequence int16 ``.nii.gz`` at 0.94 x 0.94 x 3.3 mm made from test-split
patients), **predict** (every slice and the pipeline's masks; models loaded before) and **draw** (the measurements and
the three planes, PNG-encoded). ``python benchmarks/viewer.py [--slices 60] [--repeats 3] [--data KAGGLE_3M]``.
"""
from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brainseg import measure  # noqa: E402  (after the path: run as a script)
from brainseg.config import pipeline_settings  # noqa: E402
from brainseg.data.index import index_patient, load_split  # noqa: E402
from brainseg.figures import planes  # noqa: E402
from brainseg.inference.predictor import Predictor, volume_masks  # noqa: E402
from brainseg.io import volumes  # noqa: E402
from brainseg.io.slices import encode_png, read_slice  # noqa: E402
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR  # noqa: E402

TARGET_S = 5.0
SPACING = (0.94, 0.94, 3.3)      # stored x, y, z in mm (an LPS grid: x toward L, y toward P, z toward S)
STEPS = ("read", "predict", "draw")


def source_slices(data: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` HxWx3 uint8 slices of test-split patients, and where they came from."""
    test = load_split(WEIGHTS_DIR / "split.json")["test"]
    if data is not None and (data / "kaggle_3m").is_dir():
        data = data / "kaggle_3m"
    folders = sorted((p for p in data.iterdir() if p.name in test), key=lambda p: -len(list(p.glob("*_mask.tif")))) \
        if data is not None else sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir())
    slices, used = [], []
    for folder in folders:
        slices += [read_slice(r.image_path) for r in index_patient(folder)]
        used.append(folder.name)
        if len(slices) >= count:
            break
    if len(slices) < count:
        raise SystemExit(f"only {len(slices)} slices in {', '.join(used)}; expected at least {count}")
    return slices[:count], ", ".join(used)


def nifti_gz(slices: list[np.ndarray]) -> bytes:
    """The slices as a 4D int16 ``.nii.gz`` (three sequences, values x16 + 100 as a scanner might store them)."""
    stored = np.stack(slices).transpose(2, 1, 0, 3).astype(np.int16) * 16 + 100
    image = nib.Nifti1Image(np.ascontiguousarray(stored), np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]))
    return gzip.compress(image.to_bytes(), compresslevel=6)


def one_repeat(data: bytes, model: Predictor, settings: dict) -> dict[str, float]:
    """Seconds of each step for one scan, as the volume page runs them."""
    times = {}
    started = time.perf_counter()
    scan = volumes.read_volume([("scan.nii.gz", data)])
    times["read"] = time.perf_counter() - started
    started = time.perf_counter()
    predictions = model.predict_many(scan.images_u8, batch_size=scan.batch_size)
    masks = volume_masks(predictions, settings["seg_threshold"], settings["gate"], settings["min_area"],
                         settings["largest_3d_component"])
    times["predict"] = time.perf_counter() - started
    started = time.perf_counter()
    spacing = scan.geometry.display_spacing()
    found = measure.measure(masks, scan.numbers, spacing, measure.head_midline(scan.images_u8))
    current = scan.numbers.index(found.largest_slice) if found.largest_slice else len(masks) // 2
    row, column = planes.default_crosshair(masks[current])
    for plane in planes.three_planes(scan.images_u8, masks, None, (current, row, column), spacing):
        encode_png(plane.image_u8)
    times["draw"] = time.perf_counter() - started
    return times


def cpu() -> str:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} logical CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60, help="axial slices of the scan")
    parser.add_argument("--repeats", type=int, default=3, help="times the scan goes through (median printed)")
    parser.add_argument("--data", type=Path, default=os.environ.get("BRAINSEG_TEST_DATA"),
                        help="a kaggle_3m folder (default: BRAINSEG_TEST_DATA, else the bundled samples)")
    args = parser.parse_args(argv)
    slices, used = source_slices(args.data, args.slices)
    data = nifti_gz(slices)
    print(f"{cpu()}; a {args.slices}-slice int16 .nii.gz of {len(data) / 2**20:.1f} MB from {used}")
    started = time.perf_counter()
    model = Predictor(WEIGHTS_DIR)
    model.predict(np.zeros((256, 256, 3), np.uint8))     # the app's warm-up: models load once per server
    print(f"models loaded and warmed up in {time.perf_counter() - started:.2f} s (once per server, not counted)")
    runs = [one_repeat(data, model, pipeline_settings()) for _ in range(args.repeats)]
    for number, run in enumerate(runs, 1):
        print(f"run {number}: " + ", ".join(f"{step} {run[step]:.2f} s" for step in STEPS) +
              f", total {sum(run.values()):.2f} s")
    medians = {step: statistics.median(run[step] for run in runs) for step in STEPS}
    total = statistics.median(sum(run.values()) for run in runs)
    print(f"\n| step (median of {len(runs)}) | seconds |\n|---|---:|")
    for step in STEPS:
        print(f"| {step} | {medians[step]:.2f} |")
    verdict = ("met" if total <= TARGET_S else "NOT met") if args.slices == 60 else f"not judged ({args.slices} slices)"
    print(f"| total | {total:.2f} |\ntarget {TARGET_S:g} s for 60 slices: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
