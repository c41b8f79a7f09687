"""``brainseg encodings``: the same scans as 8-bit, int16, float, 12-bit DICOM and 4D NIfTI: flagged slices and
per-volume Dice per encoding."""
from __future__ import annotations

import argparse

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split", default="val", choices=("test", "val", "train"))
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR))
    parser.add_argument("--patients", type=int, default=0, help="only the first N patients (quick checks)")
    parser.add_argument("--reference", help="an earlier `brainseg encodings` JSON: also compare every encoding with "
                        "its 8-bit figures (or the reference it carries), as floors set against earlier models are")
    parser.add_argument("--out", help="write the JSON here")


def run(args: argparse.Namespace) -> dict:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from brainseg.config import pipeline_settings
    from brainseg.data.index import by_patient, index_dataset, load_split
    from brainseg.evaluation.encodings import encodings, load_reference, report, score
    from brainseg.inference.predictor import Predictor
    from brainseg.io.slices import read_mask, read_slice
    patients = load_split(args.split_file)[args.split]
    patients = patients[:args.patients] if args.patients else patients
    reference = load_reference(Path(args.reference), patients) if args.reference else None
    records = by_patient(index_dataset(args.data, patients=patients))
    predictor, settings = Predictor(args.weights), pipeline_settings(Path(args.weights))
    per_patient: dict[str, dict] = {}
    for patient, rows in tqdm(records.items(), desc="encodings", unit="patient"):
        images = [read_slice(r.image_path) for r in rows]
        truths = [read_mask(r.mask_path, shape=i.shape[:2]) for r, i in zip(rows, images)]
        for name, build in encodings(images).items():
            per_patient.setdefault(name, {})[patient] = score(predictor, build(), truths, settings)
    result = {"split": args.split, "settings": {k: settings[k] for k in ("seg_threshold", "gate", "min_area",
                                                                         "largest_3d_component")},
              "encodings": report(per_patient, reference and reference["per_patient"])}
    if reference:
        result["reference"] = reference
    against_reference = (" against the reference's 8-bit: mean | worst |", "---:|---|") if reference else ("", "")
    print(f"| encoding ({args.split} split, {len(records)} patients) | flagged slices | per-volume Dice, mean | "
          f"change against 8-bit, mean | worst patient |{against_reference[0]}\n"
          f"|---|---:|---:|---:|---|{against_reference[1]}")
    for name, row in result["encodings"].items():
        worst = row["worst_patient"]
        line = (f"| {name} | {row['flagged']} of {row['slices']} ({row['flagged_share']:.1%}) | {row['dice_mean']:.3f} "
                f"| {row['dice_mean_change']:+.3f} | {worst['patient']} {worst['dice_change']:+.3f} |")
        if reference:
            against = row["vs_reference"]
            line += (f" {against['dice_mean_change']:+.3f} | {against['worst_patient']['patient']} "
                     f"{against['worst_patient']['dice_change']:+.3f} |")
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
