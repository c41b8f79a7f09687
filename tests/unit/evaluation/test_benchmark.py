"""The benchmark's parts on real slices and the shipped weights: the fast paths' agreement with eager fp32 on the
bundled samples, FLOPs, a quick run, a cold start."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from brainseg.cli import benchmark as benchmark_command
from brainseg.config import pipeline_settings
from brainseg.evaluation import benchmark
from brainseg.inference.predictor import Predictor
from brainseg.models.reference import ReferenceUNet
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR


@pytest.fixture(scope="module")
def sample_agreement():
    """Every variant against eager fp32 on every slice of the bundled sample patients."""
    predictors = {variant: Predictor(device="cpu", **kwargs) for variant, kwargs in benchmark.VARIANTS.items()}
    found = benchmark.sample_agreement(predictors, benchmark.all_slices(SAMPLES_DIR), pipeline_settings())
    return {variant: (predictors[variant].engine.choice, result) for variant, result in found.items()}


@pytest.mark.parametrize("variant", [v for v in benchmark.VARIANTS if v != "fp32"])
def test_fast_paths_agree_with_eager_fp32_on_every_sample_slice(sample_agreement, variant):
    """What a user would notice, portable across CPUs (bf16 kernels differ between AMX, AVX512-BF16 and none)."""
    choice, found = sample_agreement[variant]
    print(f"{variant} ({choice.engine} {choice.precision}) vs eager fp32: {found}")
    assert found["slices"] >= 100 and found["large_masks"] >= 10, "the comparison needs the samples' tumour slices"
    assert found["gate_changes"] == 0
    assert found["mask_dice"] >= benchmark.MASK_AGREEMENT
    assert found["min_slice_mask_dice"] >= benchmark.SLICE_MASK_AGREEMENT
    assert found["p999_probability_difference"] <= benchmark.PROBABILITY_P999_TOLERANCE
    assert found["max_tumour_probability_difference"] <= benchmark.TUMOUR_PROBABILITY_TOLERANCE


def test_flop_count_of_a_convolution_is_exact():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    assert benchmark.count_flops(conv, torch.zeros(1, 3, 64, 64)) == 2 * 3 * 16 * 9 * 64 * 64


def test_reference_unet_is_the_authors_size():
    model = ReferenceUNet().eval()
    assert sum(p.numel() for p in model.parameters()) == 7_763_041
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    single = benchmark.count_flops(model, torch.zeros(1, 3, 64, 64))
    assert benchmark.count_flops(model, torch.zeros(2, 3, 64, 64)) == 2 * single


def test_quick_run_reports_every_row(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    benchmark_command.add_arguments(parser)
    out = tmp_path / "bench.json"
    result = benchmark_command.run(parser.parse_args(["--repeats", "2", "--batch-repeats", "1", "--warmup", "1",
                                              "--batch", "2", "--cold-runs", "0", "--agreement-slices", "4",
                                              "--json", str(out)]))
    rows = {(row["model"], row["variant"]): row for row in result["rows"]}
    assert set(rows) >= {(model, variant) for model in ("pipeline", "classifier", "segmenter")
                         for variant in benchmark.VARIANTS}
    assert {("reference U-Net", "fp32"), ("reference U-Net", "torch")} <= set(rows)
    assert rows["pipeline", "fast"]["engine"] == "openvino" and rows["pipeline", "fp32"]["engine"] == "torch"
    assert all(row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] and row["slices_per_s"] > 0
               for row in rows.values())
    flops = {model: rows[model, "fp32"]["gflop_per_slice"] for model, _ in rows}
    assert all(row["gflop_per_slice"] == flops[row["model"]] for row in rows.values())
    assert flops["pipeline"] == pytest.approx(flops["classifier"] + flops["segmenter"])
    assert flops["reference U-Net"] > flops["segmenter"]
    assert result["peaks"]["fp32"] > 0 and result["peaks"]["bf16"] > 0
    assert all(result["peaks"][p] == max(kernels.values()) and set(kernels) == {"torch", "openvino"}
               for p, kernels in result["peaks_by_kernel"].items())
    extras = {row["step"]: row for row in result["extras"]}
    assert set(extras) == {"pipeline", "input check", "input check, one-sequence slice", "LayerCAM heat map",
                           "flip TTA (4 members)"}
    assert extras["pipeline"]["added_ms"] == 0 and all(row["p50_ms"] > 0 for row in extras.values())
    assert set(result["agreement"]) == {"fast", "torch"} and result["agreement"]["fast"]["slices"] == 4
    assert out.exists() and "| pipeline | fast (openvino" in capsys.readouterr().out


def test_cold_start_in_a_fresh_process():
    cold = benchmark.cold_start("fast", WEIGHTS_DIR, threads=1, compiled=False, runs=1)
    print(f"cold start {cold['cold_start_s']:.1f} s, peak RSS {cold['peak_rss_mb']:.0f} MB")
    assert 0 < cold["cold_start_s"] < 120 and 100 < cold["peak_rss_mb"] < 4000
