"""Throughput of ``brainseg predict``: the plain run against ``--ray --workers N`` on the same inputs, test-split slice
files and whole volumes (4D NIfTI) of the dataset written to a temporary folder. Each command is timed end to end in a
fresh process (imports, Ray's start, model loading, writing), after one untimed run that fills the OpenVINO cache.

Usage, from the repository root: ``python benchmarks/ray_predict.py [--data DIR] [--slices 200] [--volumes 3]
[--workers 1 2] [--address ADDRESS]``; a smoke run: ``--data samples --slices 4 --volumes 1``.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brainseg.data.index import by_patient, index_dataset, load_split  # noqa: E402  (after the path: run as a script)
from brainseg.evaluation.encodings import nifti, to_xyz  # noqa: E402
from brainseg.io.slices import read_slice  # noqa: E402
from brainseg.paths import WEIGHTS_DIR  # noqa: E402
from brainseg.predict import CSV_NAME  # noqa: E402


def make_inputs(data: str | None, slices: int, volumes: int, folder: Path) -> list[Path]:
    """``slices`` slice files copied from test-split patients, then ``volumes`` other test patients as 4D NIfTI
    (the patients of ``weights/split.json``'s test split found in ``data``, else every patient there)."""
    patients = by_patient(index_dataset(data))
    test = [p for p in load_split(WEIGHTS_DIR / "split.json")["test"] if p in patients] or sorted(patients)
    if len(test) <= volumes:
        raise SystemExit(f"{data}: {len(test)} patients; need more than --volumes {volumes}")
    inputs = []
    for record in [r for p in test[volumes:] for r in patients[p]][:slices]:
        inputs.append(Path(shutil.copyfile(record.image_path, folder / record.image_path.name)))
    for patient in test[:volumes]:
        stack = np.stack([read_slice(r.image_path) for r in patients[patient]])
        inputs.append(folder / f"{patient}.nii.gz")
        inputs[-1].write_bytes(nifti(to_xyz(stack)))
    return inputs


def timed(inputs: list[Path], out: Path, extra: list[str]) -> tuple[float, int, int]:
    """Seconds for one ``brainseg predict`` process, its CSV rows and the rows with an error."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "brainseg", "predict", *map(str, inputs), "--out", str(out), *extra],
                         cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode not in (0, 2):
        raise SystemExit(f"predict {' '.join(extra)} failed:\n{run.stderr[-3000:]}")
    with open(out / CSV_NAME, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return seconds, len(rows), sum(bool(r["error"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--slices", type=int, default=200, help="slice files (default 200)")
    parser.add_argument("--volumes", type=int, default=3, help="whole patients as NIfTI volumes (default 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    parser.add_argument("--address", default="", help="a Ray cluster (default: a local Ray started by each run)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="brainseg-ray-bench-") as scratch:
        folder = Path(scratch)
        (folder / "in").mkdir()
        inputs = make_inputs(args.data, args.slices, args.volumes, folder / "in")
        timed(inputs[:1], folder / "warm", [])   # converts the models once, if the cache lacks them
        runs = {"plain": timed(inputs, folder / "plain", [])}
        for workers in args.workers:
            runs[f"--ray --workers {workers}"] = timed(inputs, folder / f"ray{workers}",
                                                       ["--ray", *([args.address] if args.address else []),
                                                        "--workers", str(workers)])

    slices = runs["plain"][1]
    print(f"{len(inputs)} files ({args.slices} slice files, {args.volumes} volumes), {slices} slices; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, ray {version('ray')}, "
          f"cluster: {args.address or 'local'}")
    print("| run | wall s | files/s | slices/s | rows with an error |\n|---|---:|---:|---:|---:|")
    for name, (seconds, rows, errors) in runs.items():
        print(f"| {name} | {seconds:.1f} | {len(inputs) / seconds:.2f} | {rows / seconds:.1f} | {errors} |")
    if 1 in args.workers:
        overhead = runs["--ray --workers 1"][0] / runs["plain"][0] - 1
        print(f"Ray overhead at one worker: {overhead:+.0%} of the plain run's time")


if __name__ == "__main__":
    main()
