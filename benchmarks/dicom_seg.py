"""Time to write the DICOM SEG of a predicted mask (target: at most 2 s for a 60-slice 256x256 series).

Generates a 12-bit axial series (``brainseg.evaluation.encodings.dicom_series``), reads it as the app does, and
times :func:`brainseg.io.dicom_seg.dicom_seg` with a tumour on every slice (no frame left out: the slowest case);
prints the median and the range over the runs. Usage, from the repository root:
``python benchmarks/dicom_seg.py [--slices 60] [--size 256] [--runs 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brainseg.evaluation.encodings import dicom_series  # noqa: E402  (after the path: run as a script)
from brainseg.io.dicom_seg import dicom_seg  # noqa: E402
from brainseg.io.volumes import read_volume  # noqa: E402

TARGET_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each slice")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (args.slices, args.size, args.size)).astype(np.uint16)
    volume = read_volume([("series.zip", dicom_series(stored))])
    centre = np.hypot(*np.mgrid[:args.size, :args.size] - args.size / 2) < args.size / 5
    masks = [centre & (rng.random(centre.shape) < 0.95) for _ in range(args.slices)]
    times, size = [], 0
    for _ in range(args.runs):
        start = time.perf_counter()
        size = len(dicom_seg(volume, masks))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    verdict = "met" if median <= TARGET_S else "NOT met"
    print(f"DICOM SEG of {args.slices} slices of {args.size}x{args.size} ({size / 1e6:.2f} MB): median "
          f"{median:.3f} s over {args.runs} runs (min {min(times):.3f}, max {max(times):.3f}); "
          f"target <= {TARGET_S:g} s {verdict}")


if __name__ == "__main__":
    main()
