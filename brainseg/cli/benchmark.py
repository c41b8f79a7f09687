"""``brainseg benchmark``: latency, throughput, cold start, memory and FLOPs of inference."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with the safetensors files")
    parser.add_argument("--data", default=str(SAMPLES_DIR), help="kaggle_3m-layout folder of real slices")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the throughput figures")
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1 calls per configuration")
    parser.add_argument("--batch-repeats", type=int, default=5, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batch-1 calls first")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes per variant; 0 skips")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models of the torch variant")
    parser.add_argument("--agreement-slices", type=int, default=0,
                        help="slices of --data for the agreement with eager fp32 (default 0: every slice)")
    parser.add_argument("--json", help="also write the result here")


def run(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    import torch

    from brainseg.config import pipeline_settings
    from brainseg.evaluation.benchmark import (
        PEAK_REPEATS,
        VARIANTS,
        all_slices,
        cold_start,
        compile_models,
        extras_table,
        format_report,
        load_slices,
        machine,
        matmul_peaks,
        sample_agreement,
        timing_table,
    )
    from brainseg.inference.predictor import Predictor
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_slices(args.data, args.batch)
    predictors = {variant: Predictor(args.weights, device="cpu", **kwargs) for variant, kwargs in VARIANTS.items()}
    if args.compile:
        compile_models(predictors["torch"])
    by_kernel = matmul_peaks(PEAK_REPEATS, torch.get_num_threads())
    peaks = {precision: max(kernels.values()) for precision, kernels in by_kernel.items()}
    rows = timing_table(predictors, images, args.batch, args.repeats, args.batch_repeats, args.warmup, peaks)
    pipeline = {row.variant: row for row in rows if row.model == "pipeline"}
    result = {
        "machine": machine(), "batch": args.batch, "repeats": args.repeats, "batch_repeats": args.batch_repeats,
        "compiled": args.compile, "peaks": peaks, "peaks_by_kernel": by_kernel, "rows": [asdict(row) for row in rows],
        "speedup_p50": pipeline["fp32"].p50_ms / pipeline["fast"].p50_ms,
        "speedup_throughput": pipeline["fast"].slices_per_s / pipeline["fp32"].slices_per_s,
        "agreement": sample_agreement(predictors, all_slices(args.data, args.agreement_slices),
                                      pipeline_settings(args.weights)),
        "extras": extras_table(predictors["fast"], images, args.repeats, args.warmup),
        "cold": {variant: cold_start(variant, args.weights, args.threads, args.compile, args.cold_runs)
                 for variant in (*VARIANTS, "reference")} if args.cold_runs > 0 else {},
    }
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result
