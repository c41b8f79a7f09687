"""The engine rule and the engines on the shipped weights; the pipeline's mask rule: threshold, minimum region
size, classifier gate."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from brainseg.app.cache import device_label
from brainseg.data.index import SliceRecord
from brainseg.errors import BrainsegError
from brainseg.evaluation.benchmark import load_slices
from brainseg.evaluation.evaluate import Evaluated
from brainseg.evaluation.tune import choose_gate, largest_region
from brainseg.inference import engine, torch_engine
from brainseg.inference.predictor import BACKGROUND_GRACE_S, Prediction, Predictor
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR


@pytest.mark.parametrize("device, engine_name, precision, cpu_bf16, expected", [
    ("cpu", "auto", "auto", True, ("openvino", "bf16")), ("cpu", "auto", "auto", False, ("openvino", "fp32")),
    ("cpu", "auto", "fp32", True, ("torch", "fp32")), ("cpu", "torch", "auto", True, ("torch", "bf16")),
    ("cpu", "torch", "auto", False, ("torch", "fp32")), ("cpu", "openvino", "fp32", True, ("openvino", "fp32")),
    ("cuda", "auto", "auto", False, ("torch", "bf16")), ("cuda", "auto", "fp32", False, ("torch", "fp32"))])
def test_one_rule_picks_the_engine(device, engine_name, precision, cpu_bf16, expected) -> None:
    assert engine.choose(device, engine_name, precision, cpu_bf16) == engine.Choice(*expected)


@pytest.mark.parametrize("device, engine_name, precision, message", [
    ("cpu", "tensorrt", "auto", "engine 'tensorrt'"), ("cpu", "auto", "fp16", "precision 'fp16'"),
    ("cuda", "openvino", "auto", "runs on the CPU")])
def test_an_unknown_engine_or_precision_is_refused(device, engine_name, precision, message) -> None:
    with pytest.raises(BrainsegError, match=message):
        engine.choose(device, engine_name, precision)


@pytest.fixture(scope="module")
def slices() -> list[np.ndarray]:
    """8 real slices spread over the bundled sample patients."""
    return load_slices(SAMPLES_DIR, 8)


def test_the_cpu_default_is_openvino_in_the_cpus_best_precision() -> None:
    predictor = Predictor(device="cpu")
    expected = "bf16" if engine.cpu_has_bf16() else "fp32"
    assert predictor.engine.choice == engine.Choice("openvino", expected)
    assert device_label(predictor) == f"CPU, OpenVINO {expected}"
    assert device_label(Predictor(device="cpu", precision="fp32")) == "CPU, torch fp32"


def test_openvino_fp32_is_the_torch_reference(slices) -> None:
    """The converted graph is the same network: in fp32 it matches eager torch to rounding, features included."""
    converted, reference = Predictor(device="cpu", engine="openvino", precision="fp32"), \
        Predictor(device="cpu", precision="fp32")
    batch = reference.batch(slices)
    assert np.abs(converted.engine.segment(batch) - reference.engine.segment(batch)).max() < 1e-3
    for ours, theirs in zip(converted.classifier_outputs(batch), reference.classifier_outputs(batch)):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-3 * max(1.0, np.abs(theirs).max())
    for a, b in zip(converted.predict_many(slices), reference.predict_many(slices)):
        assert a.check.verdict == b.check.verdict


def test_the_segmenter_is_converted_as_the_same_function_without_its_concats() -> None:
    """``for_conversion`` folds BatchNorm into the decoders' 1x1 convs and runs their upsampled half before the
    upsampling: the same function as the ResUNet (random weights and BatchNorm statistics, so that no term is
    trivially zero), alone and as an ensemble's member."""
    import torch

    from brainseg.models.networks import Ensemble, ResUNet
    torch.manual_seed(0)
    nets = [ResUNet(), ResUNet()]
    for norm in (m for net in nets for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 1.5), norm.bias.data.uniform_(-0.5, 0.5)
    ensemble = Ensemble(nets).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for model in (nets[0], ensemble):
            expected = model(x)
            assert expected.max() - expected.min() > 0.1 and torch.allclose(
                torch_engine.for_conversion(model)(x), expected, atol=1e-4
            )


@pytest.mark.parametrize("engine_name", ["torch", "openvino"])
def test_both_networks_together_match_each_alone(slices, engine_name) -> None:
    """``both`` (OpenVINO: the two networks side by side on half the cores each) gives what ``segment`` and
    ``classify`` give one after the other, in fp32 to rounding, and hands the features and what ``measure``
    gave to ``judge``."""
    predictor = Predictor(device="cpu", engine=engine_name, precision="fp32")
    batch = predictor.batch(slices)
    seen = []
    seg, features, logits, after = predictor.engine.both(
        batch, lambda: "measured", lambda f, measured: seen.append((f, measured)) or "judged"
    )
    alone_features, alone_logits = predictor.engine.classify(batch)
    assert after == "judged" and len(seen) == 1 and seen[0][0] is features and seen[0][1] == "measured"
    assert np.abs(seg - predictor.engine.segment(batch)).max() < 1e-4
    assert np.abs(features - alone_features).max() < 1e-4 * max(1.0, np.abs(alone_features).max())
    assert np.abs(logits - alone_logits).max() < 1e-4 * max(1.0, np.abs(alone_logits).max())


ENSEMBLE = [WEIGHTS_DIR / "segmenter.safetensors", WEIGHTS_DIR / "folds" / "fold0.safetensors"]


@pytest.mark.parametrize("engine_name", ["torch", "openvino"])
def test_an_ensemble_predicts_its_members_mean_with_their_spread(tmp_path, slices, engine_name) -> None:
    """Two real segmenters side by side in one graph: the mean of what each predicts alone, their standard
    deviation as the spread, the classifier untouched."""
    alone = [Predictor(device="cpu", precision="fp32", segmenters=[member]).predict_many(slices) for member in ENSEMBLE]
    joint = Predictor(
        device="cpu", engine=engine_name, precision="fp32", cache_dir=tmp_path, segmenters=ENSEMBLE
    ).predict_many(slices)
    assert all(p.spread is None for p in alone[0])
    for first, second, both in zip(*alone, joint):
        np.testing.assert_allclose(both.probability, (first.probability + second.probability) / 2, atol=1e-3)
        np.testing.assert_allclose(both.spread, np.abs(first.probability - second.probability) / 2, atol=1e-3)
        assert both.tumour_probability == pytest.approx(first.tumour_probability, abs=1e-4)
    assert max(p.spread.max() for p in joint) > 0.1  # the two members really differ somewhere


def test_a_background_prediction_waits_for_a_foreground_one(slices) -> None:
    """The gallery's prefetch (background) yields: started just after a three-batch foreground call, a one-batch
    background call finishes after it and its grace period, and predicts the same as when it runs alone."""
    import threading
    import time

    predictor = Predictor(device="cpu")
    alone = predictor.predict_many(slices * 2, background=True)
    finished: dict[str, float] = {}

    def call(name: str, images: list[np.ndarray], background: bool) -> None:
        results[name] = predictor.predict_many(images, batch_size=len(slices), background=background)
        finished[name] = time.perf_counter()

    results: dict[str, list[Prediction]] = {}
    foreground = threading.Thread(target=call, args=("foreground", slices * 6, False))
    background = threading.Thread(target=call, args=("background", slices * 2, True))
    foreground.start()
    time.sleep(0.05)
    background.start()
    foreground.join()
    background.join()
    assert finished["background"] - finished["foreground"] >= 0.9 * BACKGROUND_GRACE_S  # it left the page time to draw
    for ours, theirs in zip(results["background"], alone):
        np.testing.assert_allclose(ours.probability, theirs.probability, atol=1e-6)


def test_a_page_run_defers_the_background(slices) -> None:
    """A page run that predicts nothing (drawing a cached patient) defers the background as it starts and as it
    ends: a background prediction asked for in between finishes only a grace period after the last deferral."""
    import threading
    import time

    predictor = Predictor(device="cpu")
    finished: dict[str, float] = {}
    background = threading.Thread(
        target=lambda: (
            predictor.predict_many(slices, background=True),
            finished.setdefault("background", time.perf_counter()),
        )
    )
    predictor.defer_background()
    background.start()
    time.sleep(0.5)  # the page running
    assert "background" not in finished
    predictor.defer_background()
    run_ended = time.perf_counter()
    background.join()
    assert finished["background"] - run_ended >= 0.9 * BACKGROUND_GRACE_S


def test_predicting_from_the_openvino_cache_imports_no_torch() -> None:
    """The app's serving path in a fresh process: the service module, a Predictor on the warm OpenVINO cache, two
    slices predicted with the input check; torch (~0.5 GB resident, ~2 s to import) is never imported."""
    import subprocess
    import sys

    Predictor(device="cpu")  # converts into the cache if it is cold (that alone needs torch)
    code = (
        "import sys, numpy as np; import brainseg.app.cache; from brainseg.inference.predictor import Predictor; "
        "from brainseg.data.index import index_dataset; from brainseg.io.slices import read_slice; "
        "from brainseg.paths import SAMPLES_DIR; "
        "images = [read_slice(r.image_path) for r in index_dataset(SAMPLES_DIR)[10:12]]; "
        "result = Predictor().predict_many(images); assert result[0].check is not None; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert output.stdout.strip().splitlines()[-1] == "[]"


def test_the_converted_model_is_cached_and_a_damaged_one_rebuilt(tmp_path, slices) -> None:
    import openvino as ov

    reference = Predictor(device="cpu", precision="fp32")
    core, module, folder = ov.Core(), reference.segmenter, tmp_path / "segmenter"
    batch = reference.batch(slices[:2])
    first = core.compile_model(engine.cached_model(core, lambda: torch_engine.convert(module), folder), "CPU")(batch)[0]
    assert {p.name for p in folder.iterdir()} == {"model.xml", "model.bin", "model.sha256"}
    written = (folder / "model.bin").stat().st_mtime_ns
    again = core.compile_model(engine.cached_model(core, lambda: torch_engine.convert(module), folder), "CPU")(batch)[0]
    assert (folder / "model.bin").stat().st_mtime_ns == written and np.array_equal(first, again)
    with open(folder / "model.bin", "r+b") as handle:
        handle.write(b"\0" * 64)
    rebuilt = core.compile_model(engine.cached_model(core, lambda: torch_engine.convert(module), folder), "CPU")(batch)[
        0
    ]
    assert np.array_equal(first, rebuilt)
    assert engine.sha256(folder / "model.bin") == (folder / "model.sha256").read_text()


def test_a_converted_model_another_process_cached_meanwhile_is_kept(tmp_path) -> None:
    """Two workers starting at once both convert: the copy that landed first stays (the other may be reading it)."""
    import openvino as ov
    import openvino.opset13 as ops

    core, folder, landed = ov.Core(), tmp_path / "segmenter", {}

    def tiny() -> ov.Model:
        parameter = ops.parameter([1, 4], np.float32)
        return ov.Model([ops.relu(parameter)], [parameter])

    def convert_while_another_caches() -> ov.Model:
        engine.cached_model(core, tiny, folder)
        landed["inode"] = (folder / "model.bin").stat().st_ino
        return tiny()

    engine.cached_model(core, convert_while_another_caches, folder)
    assert (folder / "model.bin").stat().st_ino == landed["inode"] and engine.complete(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["segmenter"]   # no staging folder left behind


def _probability() -> np.ndarray:
    """A 40-pixel tumour, a 3-pixel diagonal speck and one faint pixel below any threshold used here."""
    probability = np.zeros((32, 32), np.float32)
    probability[4:9, 4:12] = 0.9
    probability[20, 20] = probability[21, 21] = probability[22, 22] = 0.8
    probability[30, 2] = 0.2
    return probability


def test_regions_under_the_minimum_area_are_dropped_beside_a_kept_tumour() -> None:
    mask = Prediction(_probability(), tumour_probability=0.9).mask(threshold=0.5, gate=0.5, min_area=10)
    assert mask.sum() == 40 and mask[4:9, 4:12].all() and not mask[20:23, 20:23].any()


def test_a_diagonal_speck_is_one_region() -> None:
    mask = Prediction(_probability(), tumour_probability=0.9).mask(threshold=0.5, gate=0.5, min_area=3)
    assert mask.sum() == 43


def test_a_slice_with_only_specks_gets_an_empty_mask() -> None:
    probability = _probability()
    probability[4:9, 4:12] = 0.0
    assert not Prediction(probability, 0.9).mask(threshold=0.5, gate=0.5, min_area=10).any()
    assert Prediction(probability, 0.9).mask(threshold=0.5, gate=0.5, min_area=0).sum() == 3


@pytest.mark.parametrize("tumour_probability, gate, expected", [(0.49, 0.5, 0), (0.5, 0.5, 43), (0.9, 0.95, 0)])
def test_the_gate_empties_the_mask(tumour_probability: float, gate: float, expected: int) -> None:
    mask = Prediction(_probability(), tumour_probability).mask(threshold=0.5, gate=gate, min_area=0)
    assert mask.sum() == expected


@pytest.mark.parametrize("min_area", [0, 1, 3, 4, 40, 41])
def test_tuning_counts_a_slice_as_the_mask_does(min_area: int) -> None:
    """``tune`` decides from the largest region; it must agree with the mask the app and evaluation use."""
    probability = _probability()
    called_by_tune = largest_region(probability >= 0.5) >= max(min_area, 1)
    assert called_by_tune == Prediction(probability, 0.9).mask(0.5, 0.5, min_area).any()


def _evaluated(probability: np.ndarray, tumour_probability: float, tumour: bool, number: int) -> Evaluated:
    truth = np.zeros(probability.shape, bool)
    if tumour:
        truth[4:9, 4:12] = True
    record = SliceRecord("P", number, Path(f"P_{number}.tif"), Path(f"P_{number}_mask.tif"), int(truth.sum()))
    return Evaluated(record, truth, Prediction(probability, tumour_probability))


def test_tune_keeps_false_positives_under_the_cap_and_drops_specks_by_region() -> None:
    """Ten tumour slices (one 40-pixel region) and twenty tumour-free ones; on ten of the free slices the
    classifier is fooled and the segmenter finds eight 9-pixel specks, 72 pixels in all. A minimum region of 10
    to 40 pixels removes the specks and keeps the tumour; no minimum on total area could."""
    tumour = _probability()
    tumour[20:23, 20:23] = 0.0
    specks = np.zeros((32, 32), np.float32)
    for row in (16, 20, 24, 28):
        for col in (2, 20):
            specks[row : row + 3, col : col + 3] = 0.9
    results = (
        [_evaluated(tumour, 0.9, True, n) for n in range(10)]
        + [_evaluated(specks, 0.9, False, n) for n in range(10, 20)]
        + [_evaluated(np.zeros((32, 32), np.float32), 0.1, False, n) for n in range(20, 30)]
    )
    chosen = choose_gate(results, threshold=0.5, max_fpr=0.03)
    assert chosen["sensitivity"] == 1.0 and chosen["false_positive_rate"] == 0.0
    assert 10 <= chosen["min_area"] <= 40


def test_tune_breaks_ties_by_the_pipelines_volume_dice() -> None:
    """Every minimum area up to 40 pixels finds all tumour slices without false positives; only those over
    9 pixels also drop the 9-pixel speck beside each tumour, which raises the per-volume Dice."""
    with_speck = _probability()
    with_speck[20:23, 20:23] = 0.8
    results = [_evaluated(with_speck, 0.9, True, n) for n in range(10)] + [
        _evaluated(np.zeros((32, 32), np.float32), 0.1, False, n) for n in range(10, 30)
    ]
    chosen = choose_gate(results, threshold=0.5, max_fpr=0.03)
    assert chosen["sensitivity"] == 1.0 and chosen["false_positive_rate"] == 0.0
    assert chosen["min_area"] in (10, 25) and chosen["volume_dice"] == pytest.approx(1.0)


def test_the_cache_keeps_the_newest_converted_models_of_each_kind(tmp_path) -> None:
    for age, name in enumerate(["segmenter-a", "segmenter-b", "segmenter-c", "segmenter-d", "classifier-a"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1_000_000 - age * 1000,) * 2)  # a is the newest, d the oldest
    engine.prune(tmp_path / "segmenter-c", keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier-a", "segmenter-a", "segmenter-b", "segmenter-c"]


@pytest.mark.parametrize(
    "count, sizes",
    [(0, []), (1, [1]), (16, [16]), (24, [16, 8]), (36, [16, 16, 4]), (23, [16, 4, 2, 1]), (15, [8, 4, 2, 1])],
)
def test_slices_are_split_into_full_batches_then_powers_of_two(count: int, sizes: list[int]) -> None:
    from brainseg.inference.predictor import batch_sizes

    assert batch_sizes(count) == sizes
