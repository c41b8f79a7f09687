"""``brainseg predict``: masks, overlays and a CSV for slice files and volumes, with the input check."""
from __future__ import annotations

import argparse
from pathlib import Path

from brainseg.errors import BrainsegError
from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="slice images (.tif, .png, .jpg) or volumes (.nii, .nii.gz, "
                        "multi-page .tif, .zip, or a folder of one DICOM series)")
    parser.add_argument("--out", required=True, help="folder for the PNGs and predictions.csv")
    parser.add_argument("--threshold", type=float, help="segmenter threshold (default: weights/pipeline.json)")
    parser.add_argument("--gate", type=float, help="classifier gate (default: weights/pipeline.json)")
    parser.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with the safetensors files")
    parser.add_argument("--probabilities", action="store_true", help="also write the segmenter's per-pixel "
                        "probabilities (float32 0-1, before threshold and gate) as <stem>_probabilities.nii.gz")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="predict on Ray workers: a local Ray without ADDRESS, else the cluster at auto, HOST:PORT "
                        "or ray://HOST:PORT; inputs must be paths the workers can read (docs/scale.md)")
    parser.add_argument("--workers", type=int, help="Ray workers (default: one per 2 CPUs of each node)")


def run(args: argparse.Namespace) -> list[dict]:
    from brainseg.config import pipeline_settings
    from brainseg.inference.predictor import Predictor
    from brainseg.predict import CSV_NAME, PredictOptions, predict_files, write_csv
    settings = pipeline_settings(Path(args.weights))
    threshold = settings["seg_threshold"] if args.threshold is None else args.threshold
    gate = settings["gate"] if args.gate is None else args.gate
    out = Path(args.out)
    options = PredictOptions(threshold, gate, int(settings["min_area"]), bool(settings["largest_3d_component"]),
                             args.probabilities)
    if args.ray is None and args.workers is not None:
        raise BrainsegError("--workers needs --ray")
    if args.workers is not None and args.workers < 1:
        raise BrainsegError(f"--workers {args.workers}: expected 1 or more")
    if args.ray is None:
        rows = predict_files(Predictor(args.weights), [Path(f) for f in args.files], out, options)
    else:
        from brainseg.distributed import predict_files_ray
        rows = predict_files_ray([Path(f) for f in args.files], out, options, args.weights, args.ray, args.workers)
    write_csv(rows, out / CSV_NAME)
    flagged = sum(row["verdict"] not in ("", "ok") for row in rows)
    failed = sum(bool(row["error"]) for row in rows)
    print(f"predict: {len(rows) - failed} of {len(rows)} slices predicted, {flagged} flagged by the input check; "
          f"{out / CSV_NAME}")
    if failed:
        raise BrainsegError(f"{failed} of {len(args.files)} inputs could not be read; see the error column of "
                            f"{out / CSV_NAME}")
    return rows
