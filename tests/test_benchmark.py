"""The benchmark's parts on real slices and the shipped weights: the fast path's tolerance, FLOPs, a quick run."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from brainseg import benchmark
from brainseg.inference import Predictor, pipeline_settings
from brainseg.reference import ReferenceUNet
from brainseg.samples import SAMPLES_DIR


@pytest.fixture(scope="module")
def slices():
    """24 real Kaggle slices spread over the bundled sample patients (tumour and healthy)."""
    return benchmark.load_slices(SAMPLES_DIR, 24)


def test_fast_path_stays_within_tolerance_of_eager_fp32(slices):
    fast, eager = Predictor(device="cpu"), Predictor(device="cpu", precision="fp32")
    fast_predictions, eager_predictions = fast.predict_many(slices), eager.predict_many(slices)
    settings = pipeline_settings()
    tumour_slices = sum(p.mask(settings["seg_threshold"], settings["gate"], int(settings["min_area"])).any()
                        for p in eager_predictions)
    assert tumour_slices >= 3, "the comparison needs slices where the pipeline finds tumour"
    found = benchmark.agreement(fast_predictions, eager_predictions, settings)
    print(f"fast path ({fast.precision}) vs eager fp32 on {len(slices)} slices: {found}")
    assert found["max_probability_difference"] <= benchmark.PROBABILITY_TOLERANCE
    assert found["mean_probability_difference"] <= benchmark.MEAN_PROBABILITY_TOLERANCE
    assert found["max_tumour_probability_difference"] <= benchmark.TUMOUR_PROBABILITY_TOLERANCE
    assert found["mask_dice"] >= benchmark.MASK_AGREEMENT


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
    benchmark.add_arguments(parser)
    out = tmp_path / "bench.json"
    result = benchmark.run(parser.parse_args(["--repeats", "2", "--batch-repeats", "1", "--warmup", "1",
                                              "--batch", "2", "--cold-runs", "0", "--json", str(out)]))
    rows = {(row["model"], row["variant"]): row for row in result["rows"]}
    assert set(rows) == {(model, variant) for model in ("pipeline", "classifier", "segmenter", "reference U-Net")
                         for variant in benchmark.VARIANTS}
    assert all(row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] and row["slices_per_s"] > 0
               for row in rows.values())
    flops = {model: rows[model, "fp32"]["gflop_per_slice"] for model, _ in rows}
    assert flops["pipeline"] == pytest.approx(flops["classifier"] + flops["segmenter"])
    assert flops["reference U-Net"] > flops["segmenter"]
    assert result["peaks"]["fp32"] > 0 and result["peaks"]["bf16"] > 0
    extras = {row["step"]: row for row in result["extras"]}
    assert set(extras) == {"pipeline", "input check", "LayerCAM heat map", "flip TTA (4 members)"}
    assert extras["pipeline"]["added_ms"] == 0 and all(row["p50_ms"] > 0 for row in extras.values())
    assert out.exists() and "| pipeline | fast" in capsys.readouterr().out


def test_cold_start_in_a_fresh_process():
    cold = benchmark.cold_start("fast", benchmark.WEIGHTS_DIR, threads=1, compiled=False, runs=1)
    print(f"cold start {cold['cold_start_s']:.1f} s, peak RSS {cold['peak_rss_mb']:.0f} MB")
    assert 0 < cold["cold_start_s"] < 120 and 100 < cold["peak_rss_mb"] < 4000
