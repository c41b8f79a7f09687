"""``brainseg benchmark``: every engine side by side, against eager fp32 and the reference U-Net.

Latency (batch 1), throughput, FLOPs and the share of this machine's matmul peak for each network and the pipeline,
agreement with the fp32 reference, what the app adds (input check, LayerCAM, flip TTA), cold start and peak memory.
Configurations run in interleaved rounds on the same slices, so background load hits all alike.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from brainseg import explain, metrics
from brainseg.check.assess import assess
from brainseg.check.sequence import grey_input
from brainseg.data.index import index_dataset
from brainseg.inference.predictor import Prediction, Predictor
from brainseg.io.slices import read_slice
from brainseg.memory import resident_mb
from brainseg.models.reference import ReferenceUNet
from brainseg.preprocess import MODEL_SIZE, preprocess

# How close the fast path must stay to eager fp32 on the bundled samples' slices (tests/test_benchmark.py), in
# what a user sees: bf16 kernels differ between CPUs (AMX, AVX512-BF16), so the single worst pixel is not a
# portable bound (OpenVINO bf16 on an Intel AMX CPU: worst pixel 0.36, 99.9th percentile 0.023; masks pooled
# Dice 0.995, per-slice minimum 0.978).
MASK_AGREEMENT = 0.99                # Dice of the pipeline masks, pooled over the slices
SLICE_MASK_AGREEMENT = 0.95          # Dice of each slice's mask where the reference mask has MIN_MASK_PX or more
MIN_MASK_PX = 200
PROBABILITY_P999_TOLERANCE = 0.05    # 99.9th percentile of |p_fast - p_fp32| over all pixels of all slices
TUMOUR_PROBABILITY_TOLERANCE = 0.02  # max difference of the classifier's tumour probability

VARIANTS: dict[str, dict[str, str]] = {  # variant: Predictor arguments (on the CPU)
    "fast": {}, "torch": {"engine": "torch"}, "fp32": {"precision": "fp32"}}
GEMM_SIZE = 2048
PEAK_REPEATS = 12    # best of: the peak is a property of the machine, noise only lowers a run


@dataclass(frozen=True)
class Row:
    """Timings of one model in one variant; times per slice."""

    model: str
    variant: str      # "fast" (the Predictor's default), "torch" or "fp32" (eager), see VARIANTS
    engine: str       # what ran it: "openvino" or "torch"
    precision: str    # what the variant ran in on this machine: "bf16" or "fp32"
    gflop_per_slice: float
    p50_ms: float
    p95_ms: float
    slices_per_s: float
    peak_fraction: float


def load_slices(folder: str | Path, count: int) -> list[np.ndarray]:
    """``count`` real slices evenly spread over a kaggle_3m-layout folder (the bundled samples by default)."""
    records = index_dataset(folder)
    step = max(len(records) // count, 1)
    return [read_slice(record.image_path) for record in records[::step][:count]]


def matmul_peak_gflops(dtype: torch.dtype, repeats: int, size: int = GEMM_SIZE) -> float:
    """Best GFLOP/s of a ``size``-square GEMM in ``dtype`` over ``repeats`` runs, torch's.

    Args:
        dtype: the matrices' element type (e.g. ``torch.float32``, ``torch.bfloat16``).
        repeats: timed runs (after one untimed); the fastest counts.
        size: side of the square matrices.

    Returns:
        The best GFLOP/s (``2 * size**3`` FLOPs per run).
    """
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


class _Gemm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def openvino_matmul_peak_gflops(precision: str, repeats: int, threads: int, size: int = GEMM_SIZE) -> float:
    """Best GFLOP/s of a ``size``-square GEMM compiled by OpenVINO for the CPU in ``precision``.

    Args:
        precision: ``"fp32"`` or ``"bf16"``, the inference precision hint.
        repeats: timed runs (after one untimed); the fastest counts.
        threads: OpenVINO's inference threads.
        size: side of the square matrices.

    Returns:
        The best GFLOP/s (``2 * size**3`` FLOPs per run).
    """
    import openvino as ov
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(_Gemm(size).eval(), example_input=torch.zeros(size, size))
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request, x = compiled.create_infer_request(), np.random.rand(size, size).astype(np.float32)
    request.infer({0: x})
    best = min(_seconds(lambda: request.infer({0: x})) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def matmul_peaks(repeats: int, threads: int) -> dict[str, dict[str, float]]:
    """This machine's GEMM peak per precision: the best of torch's and OpenVINO's kernels (either may be the
    faster one on a given CPU; a peak below what the engines reach would make their fractions exceed 1)."""
    return {
        "fp32": {
            "torch": matmul_peak_gflops(torch.float32, repeats),
            "openvino": openvino_matmul_peak_gflops("fp32", repeats, threads),
        },
        "bf16": {
            "torch": matmul_peak_gflops(torch.bfloat16, repeats),
            "openvino": openvino_matmul_peak_gflops("bf16", repeats, threads),
        },
    }


def count_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """FLOPs (multiply and add counted apart) of one forward pass, from ``FlopCounterMode``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops()


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _forward(model: nn.Module, batch: torch.Tensor,
             autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             ) -> Callable[[], object]:
    """A call running ``model`` on ``batch`` in inference mode, under a predictor's ``autocast``."""

    def call() -> object:
        with torch.inference_mode(), autocast():
            return model(batch)

    return call


def interleaved_times(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds of all calls in turn after ``warmup`` untimed rounds. Interleave
    only calls of one engine: torch's OpenMP threads keep spinning after a torch call and slow an OpenVINO call
    right after it by about 1.7x (measured on a 2-core Intel Xeon), which a server that only runs OpenVINO
    never sees.

    Args:
        calls: the calls to time, by name.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        Each call's seconds, one per round, by name.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            times[key].append(_seconds(call))
    return times


def agreement(fast: Sequence[Prediction], eager: Sequence[Prediction], settings: dict[str, float]) -> dict[str, float]:
    """How far ``fast`` strays from eager fp32 on the same slices: gate decisions changed, pipeline masks (pooled
    Dice, and the lowest per-slice Dice where the reference mask has ``MIN_MASK_PX`` or more), per-pixel
    probability differences (99.9th percentile, worst) and the classifier's largest difference.

    Args:
        fast: the variant's predictions.
        eager: eager fp32's predictions of the same slices, in the same order (the reference).
        settings: the pipeline settings: ``seg_threshold``, ``gate`` and ``min_area``.

    Returns:
        ``slices``, ``gate_changes``, ``mask_dice``, ``min_slice_mask_dice``, ``large_masks`` (slices in that
        minimum), ``p999_probability_difference``, ``max_probability_difference`` and
        ``max_tumour_probability_difference``.
    """
    threshold, gate, min_area = settings["seg_threshold"], settings["gate"], int(settings["min_area"])
    pooled = metrics.Counts(0, 0, 0)
    slice_dice = []
    for a, b in zip(fast, eager):
        mask_a, mask_b = a.mask(threshold, gate, min_area), b.mask(threshold, gate, min_area)
        found = metrics.counts(mask_a, mask_b)
        pooled = pooled + found
        if mask_b.sum() >= MIN_MASK_PX:
            slice_dice.append(metrics.dice(found))
    differences = np.concatenate([np.abs(a.probability - b.probability).ravel() for a, b in zip(fast, eager)])
    return {
        "slices": len(eager),
        "gate_changes": sum(
            (a.tumour_probability >= gate) != (b.tumour_probability >= gate) for a, b in zip(fast, eager)
        ),
        "mask_dice": metrics.dice(pooled),
        "min_slice_mask_dice": min(slice_dice, default=1.0),
        "large_masks": len(slice_dice),
        "p999_probability_difference": float(np.percentile(differences, 99.9)),
        "max_probability_difference": float(differences.max()),
        "max_tumour_probability_difference": max(
            abs(a.tumour_probability - b.tumour_probability) for a, b in zip(fast, eager)
        ),
    }


def all_slices(folder: str | Path, count: int = 0) -> list[np.ndarray]:
    """Every slice of a kaggle_3m-layout folder in index order (the first ``count`` when ``count`` > 0)."""
    records = index_dataset(folder)
    return [read_slice(record.image_path) for record in (records[:count] if count > 0 else records)]


def sample_agreement(
    predictors: dict[str, Predictor], images: Sequence[np.ndarray], settings: dict[str, float]
) -> dict[str, dict[str, float]]:
    """:func:`agreement` of every variant but the reference with eager fp32 (``predictors["fp32"]``).

    Args:
        predictors: one predictor per variant (see ``VARIANTS``), ``"fp32"`` among them.
        images: ``HxWx3 uint8`` slices every variant predicts.
        settings: the pipeline settings: ``seg_threshold``, ``gate`` and ``min_area``.

    Returns:
        :func:`agreement`'s figures, by variant.
    """
    eager = predictors["fp32"].predict_many(images)
    return {
        variant: agreement(predictor.predict_many(images), eager, settings)
        for variant, predictor in predictors.items()
        if variant != "fp32"
    }


def _reference_model(fast: bool) -> nn.Module:
    model = ReferenceUNet().eval()
    return model.to(memory_format=torch.channels_last) if fast else model


def timing_table(
    predictors: dict[str, Predictor],
    images: Sequence[np.ndarray],
    batch_size: int,
    repeats: int,
    batch_repeats: int,
    warmup: int,
    peaks: dict[str, float],
) -> list[Row]:
    """Rows for classifier, segmenter and pipeline in each variant (through its engine), and the reference U-Net
    in the torch variants.

    Args:
        predictors: one predictor per variant (see ``VARIANTS``); ``"fp32"``'s models are the ones FLOPs are counted on.
        images: ``HxWx3 uint8`` slices: the first is timed at batch 1, the first ``batch_size`` as a batch.
        batch_size: slices of the throughput batch.
        repeats: timed rounds at batch 1 (latency).
        batch_repeats: timed rounds of the batch (throughput), after one untimed round.
        warmup: untimed rounds before the batch-1 timing.
        peaks: this machine's matmul peak in GFLOP/s, by precision (``"fp32"``, ``"bf16"``).

    Returns:
        The rows, by model (pipeline, classifier, segmenter, reference U-Net), then variant.
    """
    single, batch = [images[0]], list(images[:batch_size])
    calls_1: dict[tuple[str, str], Callable[[], object]] = {}
    calls_n: dict[tuple[str, str], Callable[[], object]] = {}
    reference = predictors["fp32"]
    probe = reference.tensors(single)
    flops = {
        "classifier": count_flops(reference.classifier, probe),
        "segmenter": count_flops(reference.segmenter, probe),
        "reference U-Net": count_flops(ReferenceUNet().eval(), probe),
    }
    flops["pipeline"] = flops["classifier"] + flops["segmenter"]
    for variant, predictor in predictors.items():
        array_1, array_n = predictor.batch(single), predictor.batch(batch)
        engine = predictor.engine
        calls_1["classifier", variant] = lambda e=engine, a=array_1: e.classify(a)
        calls_n["classifier", variant] = lambda e=engine, a=array_n: e.classify(a)
        calls_1["segmenter", variant] = lambda e=engine, a=array_1: e.segment(a)
        calls_n["segmenter", variant] = lambda e=engine, a=array_n: e.segment(a)
        if engine.choice.engine == "torch":
            tensor_1, tensor_n = predictor.tensors(single), predictor.tensors(batch)
            model = _reference_model(predictor.precision == "bf16")
            calls_1["reference U-Net", variant] = _forward(model, tensor_1, predictor.autocast)
            calls_n["reference U-Net", variant] = _forward(model, tensor_n, predictor.autocast)
        calls_1["pipeline", variant] = lambda p=predictor: p.predict(single[0])
        calls_n["pipeline", variant] = lambda p=predictor: p.predict_many(batch, batch_size)
    keys = {str(key): key for key in calls_1}
    times_1: dict[str, list[float]] = {}
    times_n: dict[str, list[float]] = {}
    for variant in predictors:  # one variant at a time: see interleaved_times
        labels = [label for label, key in keys.items() if key[1] == variant]
        times_1.update(interleaved_times({label: calls_1[keys[label]] for label in labels}, repeats, warmup))
        times_n.update(interleaved_times({label: calls_n[keys[label]] for label in labels}, batch_repeats, 1))
    rows = []
    for label, (name, variant) in keys.items():
        per_call_ms = np.array(times_1[label]) * 1e3
        slices_per_s = len(batch) / float(np.median(times_n[label]))
        achieved = flops[name] * slices_per_s / 1e9
        choice = predictors[variant].engine.choice
        rows.append(
            Row(
                name,
                variant,
                choice.engine,
                choice.precision,
                flops[name] / 1e9,
                float(np.percentile(per_call_ms, 50)),
                float(np.percentile(per_call_ms, 95)),
                slices_per_s,
                achieved / peaks[choice.precision],
            )
        )
    order = ("pipeline", "classifier", "segmenter", "reference U-Net")
    return sorted(rows, key=lambda row: (order.index(row.model), list(VARIANTS).index(row.variant)))


GREY_CHECK = "input check, one-sequence slice"


def extras_table(
    predictor: Predictor, images: Sequence[np.ndarray], repeats: int, warmup: int
) -> list[dict[str, float]]:
    """Per-slice p50 ms at batch 1 of the pipeline and of what the app adds to it, interleaved on one slice.

    ``added_ms`` is the cost on top of a plain prediction: the heat map runs after it, flip-TTA replaces it (TTA
    minus the pipeline), and the input check runs inside every prediction, its pixel layers beside the classifier:
    its ``added_ms`` is a prediction with the check minus one without it (a second Predictor, the two called in
    turn), its ``p50_ms`` the check called on its own. All on the first of ``images``, and the check also on the
    FLAIR channel alone (a one-sequence upload) of the first slice with enough brain to be scored as a grey slice.

    Args:
        predictor: the served predictor; without an input check, the check's rows are left out.
        images: ``HxWx3 uint8`` slices (the first is timed; see above for the grey one).
        repeats: timed rounds (four times as many for the check's with/without pair).
        warmup: untimed rounds first.

    Returns:
        One dict per step: ``step``, ``p50_ms``, ``added_ms`` and ``added_fraction`` (of the plain prediction).
    """
    image = images[0]
    grey = np.repeat(next((i for i in images if grey_input(i[..., 1]) is not None), image)[..., 1:2], 3, axis=2)
    features, _ = predictor.classifier_outputs(predictor.batch([image, grey]))
    serving = {
        "pipeline": lambda: predictor.predict(image),
        "input check": lambda: assess(image, features[0], predictor.input_check),
        GREY_CHECK: lambda: assess(grey, features[1], predictor.input_check),
    }
    if predictor.input_check is None:
        del serving["input check"], serving[GREY_CHECK]
    explaining = {
        "LayerCAM heat map": lambda: explain.activation_maps(predictor, [image]),
        "flip TTA (4 members)": lambda: explain.tta_predict_many(predictor, [image]),
    }
    medians = {
        name: float(np.median(seconds)) * 1e3  # the torch steps after: see interleaved_times
        for calls in (serving, explaining)
        for name, seconds in interleaved_times(calls, repeats, warmup).items()
    }
    pipeline_ms = medians["pipeline"]
    added = {
        name: 0.0 if name == "pipeline" else ms - pipeline_ms if name.startswith("flip TTA") else ms
        for name, ms in medians.items()
    }
    fractions = {name: ms / pipeline_ms for name, ms in added.items()}
    if "input check" in medians:
        unchecked = Predictor(predictor.weights_dir, device="cpu", check=False, segmenters=predictor.segmenter_files)
        for step, slice_u8 in (("input check", image), (GREY_CHECK, grey)):
            pair = {
                name: float(np.median(seconds)) * 1e3
                for name, seconds in interleaved_times(
                    {
                        "with": lambda s=slice_u8: predictor.predict(s),
                        "without": lambda s=slice_u8: unchecked.predict(s),
                    },
                    4 * repeats,
                    warmup,
                ).items()
            }  # a difference of two noisy medians: more calls
            added[step] = pair["with"] - pair["without"]
            fractions[step] = added[step] / pair["without"]
    return [
        {"step": name, "p50_ms": ms, "added_ms": added[name], "added_fraction": fractions[name]}
        for name, ms in medians.items()
    ]


def cold_start(
    variant: str, weights_dir: str | Path, threads: int | None, compiled: bool, runs: int
) -> dict[str, float]:
    """Median seconds from spawning a fresh interpreter to its first prediction (:func:`cold_child`), and the
    largest peak RSS (MB) after a further batch of 16.

    Args:
        variant: one of ``VARIANTS`` or ``"reference"`` (the reference U-Net).
        weights_dir: the shipped weights folder the child loads.
        threads: torch intra-op threads in the child; ``None`` (or 0): torch's choice.
        compiled: run the ``"torch"`` variant's models through ``torch.compile``.
        runs: fresh interpreters to start, one after another.

    Returns:
        ``cold_start_s`` (median over the runs) and ``peak_rss_mb`` (largest).
    """
    set_threads = f"torch.set_num_threads({threads}); " if threads else ""
    results = []
    for _ in range(runs):
        code = (
            f"import json, torch; {set_threads}from brainseg.evaluation.benchmark import cold_child; "
            f"print(json.dumps(cold_child({variant!r}, {str(weights_dir)!r}, {time.time()!r}, {compiled!r})))"
        )
        command = [sys.executable, "-c", code]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return {
        "cold_start_s": float(np.median([r["cold_start_s"] for r in results])),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def compile_models(predictor: Predictor) -> None:
    """Run the predictor's torch engine on ``torch.compile`` versions of its models (an experiment, not shipped)."""
    predictor.engine.segmenter = torch.compile(predictor.segmenter)
    predictor.engine.classifier = torch.compile(predictor.classifier)


def cold_child(variant: str, weights_dir: str | Path, started: float, compiled: bool) -> dict[str, float]:
    """In a fresh process: load, predict one slice (the cold start), then a batch of 16 (for peak memory).

    Args:
        variant: one of ``VARIANTS`` or ``"reference"`` (the reference U-Net).
        weights_dir: the shipped weights folder to load.
        started: ``time.time()`` when the parent spawned this process.
        compiled: run the ``"torch"`` variant's models through ``torch.compile``.

    Returns:
        ``cold_start_s`` (seconds from ``started`` to the first prediction) and ``peak_rss_mb`` (``VmHWM``).
    """
    image = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
    image[64:192, 64:192] = 120
    if variant == "reference":
        model = ReferenceUNet().eval()
        _forward(model, torch.from_numpy(preprocess(image))[None])()
        elapsed = time.time() - started
        _forward(model, torch.from_numpy(np.stack([preprocess(image)] * 16)))()
    else:
        predictor = Predictor(weights_dir, device="cpu", **VARIANTS[variant])
        if compiled and variant == "torch":
            compile_models(predictor)
        predictor.predict(image)
        elapsed = time.time() - started
        predictor.predict_many([image] * 16)
    return {"cold_start_s": elapsed, "peak_rss_mb": resident_mb()["VmHWM"]}


def format_report(result: dict) -> str:
    """Markdown tables of a benchmark result."""
    lines = [
        f"machine: {result['machine']}",
        f"matmul peak ({GEMM_SIZE}x{GEMM_SIZE} GEMM, best of runs): fp32 {result['peaks']['fp32']:.0f} "
        f"GFLOP/s, bf16 {result['peaks']['bf16']:.0f} GFLOP/s",
        "",
        f"| model | variant | GFLOP/slice | p50 ms (batch 1) | p95 ms | slices/s (batch {result['batch']}) "
        "| % of matmul peak |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['model']} | {row['variant']} ({row['engine']} {row['precision']}) | "
            f"{row['gflop_per_slice']:.2f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['slices_per_s']:.1f} | "
            f"{100 * row['peak_fraction']:.1f} |"
        )
    lines += [
        "",
        f"pipeline speed-up, fast over eager fp32: {result['speedup_p50']:.2f}x at batch 1 (p50), "
        f"{result['speedup_throughput']:.2f}x at batch {result['batch']}",
    ]
    for variant, found in result["agreement"].items():
        lines.append(
            f"{variant} vs eager fp32 on {found['slices']} slices: "
            + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in found.items() if k != "slices"
            )
        )
    lines += [
        "",
        "| step (batch 1) | p50 ms | added to a prediction, ms | added, % of a prediction |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {row['step']} | {row['p50_ms']:.1f} | {row['added_ms']:.1f} | {100 * row['added_fraction']:.1f} |"
        for row in result["extras"]
    ]
    if result["cold"]:
        lines += ["", "| process | cold start s (median) | peak RSS MB |", "|---|---:|---:|"]
        lines += [
            f"| {variant} | {cold['cold_start_s']:.2f} | {cold['peak_rss_mb']:.0f} |"
            for variant, cold in result["cold"].items()
        ]
    return "\n".join(lines)


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
