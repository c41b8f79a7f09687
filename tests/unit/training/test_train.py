"""Training smoke runs on three real patients: two CPU processes under torchrun (DDP, gloo), resume, classifier."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brainseg.data.index import load_folds, save_split
from brainseg.models.weights import load_model

ROOT = Path(__file__).resolve().parents[3]
TRAIN = ["TCGA_CS_6290_20000917", "TCGA_HT_8018_19970411"]   # 20 slices each, 5 with tumour
VAL = ["TCGA_CS_4942_19970222"]                              # 20 slices, 6 with tumour


@pytest.fixture(scope="module")
def tiny_data(kaggle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A kaggle_3m folder of three real patients (links into the full one) and its split JSON."""
    root = tmp_path_factory.mktemp("tiny")
    folder = root / "kaggle_3m"
    folder.mkdir()
    for patient in TRAIN + VAL:
        (folder / patient).symlink_to(kaggle_dir / patient, target_is_directory=True)
    split = root / "split.json"
    save_split({"train": TRAIN, "val": VAL, "test": []}, split, seed=0)
    return folder, split


def run_brainseg(arguments: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = (launcher + ["-m", "brainseg"] if processes > 1 else [sys.executable, "-m", "brainseg"]) + arguments
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    progress = ("%|", "it/s]", "s/it]")
    log = "\n".join(line for line in result.stderr.splitlines() if not any(mark in line for mark in progress))
    assert result.returncode == 0, log[-6000:]
    return result


def common_arguments(kind: str, data: Path, split: Path, out: Path, epochs: int) -> list[str]:
    return ["train", kind, "--data", str(data), "--split", str(split), "--out", str(out), "--epochs", str(epochs),
            "--limit-patients", "2", "--max-steps", "2", "--batch-size", "2", "--threads", "1", "--seed", "0"]


def read_history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


def test_segmenter_under_torchrun_with_resume(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, split = tiny_data
    out = tmp_path / "seg"
    run_brainseg(common_arguments("segmenter", data, split, out, epochs=1) + ["--crop", "64"], processes=2)

    history = read_history(out)
    assert history["kind"] == "segmenter" and history["monitor"] == "volume_dice"
    assert [e["epoch"] for e in history["epochs"]] == [1]
    first = history["epochs"][0]
    for key in ("train_loss", "train_metric", "val_loss", "val_metric", "val_tversky", "volume_dice", "lr", "seconds"):
        assert math.isfinite(first[key]), key
    assert 0.0 <= first["val_tversky"] <= 1.0 and first["train_loss"] > 0

    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]) == 1
    assert not any(key.startswith("module.") for key in checkpoint["model"])   # the bare model, not the DDP wrapper
    model, settings = load_model(out / "segmenter.safetensors")
    assert settings["kind"] == "segmenter" and type(model).__name__ == "ResUNet"

    run_brainseg(common_arguments("segmenter", data, split, out, epochs=2)
                 + ["--crop", "64", "--resume", str(out / "last.pt")], processes=2)
    resumed = read_history(out)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert resumed["epochs"][0] == first                                       # epoch 1 carried over, not re-run
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def test_classifier_single_process(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, split = tiny_data
    out = tmp_path / "cls"
    run_brainseg(common_arguments("classifier", data, split, out, epochs=1) + ["--input-size", "64"])
    history = read_history(out)
    assert history["kind"] == "classifier" and history["monitor"] == "auc"
    entry = history["epochs"][0]
    assert 0.0 <= entry["val_metric"] <= 1.0 and 0.0 <= entry["auc"] <= 1.0
    model, settings = load_model(out / "classifier.safetensors")
    assert settings == {"kind": "classifier", "input_size": 64}
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 256, 256)).shape == (1, 2)


def test_segmenter_fine_tune_from_weights_with_ema_and_per_image_dice(
    tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    data, split = tiny_data
    shipped = ROOT / "weights" / "segmenter.safetensors"
    base = common_arguments("segmenter", data, split, tmp_path / "scratch", epochs=1) + ["--crop", "64"]
    run_brainseg(base)
    tuned = tmp_path / "tuned"
    run_brainseg(
        [a if a != str(tmp_path / "scratch") else str(tuned) for a in base]
        + ["--init", str(shipped), "--ema", "0.9", "--dice-weight", "0.5"]
    )
    scratch_dice = read_history(tmp_path / "scratch")["epochs"][0]["volume_dice"]
    tuned_dice = read_history(tuned)["epochs"][0]["volume_dice"]
    assert tuned_dice > 0.6 > scratch_dice  # two steps cannot train a segmenter: the shipped weights were loaded
    checkpoint = torch.load(tuned / "last.pt", weights_only=True)
    assert int(checkpoint["ema"]["n_averaged"]) == 2  # the average followed both steps, and is resumable
    last, _ = load_model(tuned / "segmenter_last.safetensors")  # the last epoch's weights are the average's
    averaged = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k != "n_averaged"}
    assert all(
        torch.equal(v, averaged[k].half().float()) for k, v in last.state_dict().items() if v.is_floating_point()
    )


def test_segmenter_distilled_from_a_teacher_across_storages(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    """A student that starts as its teacher and sees the slices as other storage reads them back: the teacher's
    outputs on the slices as stored are the targets, so the student stays close to it."""
    data, split = tiny_data
    shipped = ROOT / "weights" / "segmenter.safetensors"
    out = tmp_path / "distil"
    run_brainseg(common_arguments("segmenter", data, split, out, epochs=1)
                 + ["--crop", "64", "--init", str(shipped), "--teacher", str(shipped), "--stored-as", "1",
                    "--gamma", "1.5", "--lr", "1e-5"])
    history = read_history(out)
    assert history["args"]["teacher"] == str(shipped) and history["args"]["stored_as"] == 1.0
    assert history["epochs"][0]["volume_dice"] > 0.6       # the shipped weights, barely moved


def test_classifier_distilled_from_the_shipped_one(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    """The classifier's targets are the teacher's softmax on the slice as stored: a student started from the
    teacher keeps its validation AUC after two steps at a small rate."""
    data, split = tiny_data
    shipped = ROOT / "weights" / "classifier.safetensors"
    out = tmp_path / "distil"
    run_brainseg(common_arguments("classifier", data, split, out, epochs=1)
                 + ["--input-size", "192", "--init", str(shipped), "--teacher", str(shipped), "--stored-as", "1",
                    "--lr", "1e-6"])
    history = read_history(out)
    assert history["args"]["teacher"] == str(shipped)
    assert history["epochs"][0]["auc"] > 0.9               # the shipped classifier, barely moved


def test_a_teacher_of_another_kind_is_refused_in_one_line(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, split = tiny_data
    command = [sys.executable, "-m", "brainseg"] + common_arguments("segmenter", data, split, tmp_path / "x", 1) + [
        "--teacher", str(ROOT / "weights" / "classifier.safetensors")]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "is a classifier, not a segmenter" in result.stderr and "Traceback" not in result.stderr


def test_segmenter_fold_holds_out_its_patients_and_records_the_folds(
    tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    data, split = tiny_data
    folded = tmp_path / "split.json"
    folded.write_text(split.read_text())
    out = tmp_path / "fold1"
    run_brainseg(
        common_arguments("segmenter", data, folded, out, epochs=3)
        + ["--crop", "64", "--folds", "3", "--fold", "1", "--validate-every", "2"]
    )
    folds = load_folds(folded)
    assert folds is not None and sorted(sum(folds, [])) == sorted(TRAIN + VAL)  # written to the split file
    used = json.loads((out / "split.json").read_text())
    assert used["val"] == folds[1] and sorted(used["train"] + used["val"]) == sorted(TRAIN + VAL)
    epochs = read_history(out)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert ["volume_dice" in e for e in epochs] == [False, True, True]  # every 2nd epoch and the last


def test_ema_warm_up_follows_the_model_early_and_reaches_the_set_decay() -> None:
    from torch.optim.swa_utils import AveragedModel

    from brainseg.training.train import ema_with_warmup

    model = torch.nn.BatchNorm2d(4)
    averaged = AveragedModel(model, multi_avg_fn=ema_with_warmup(0.998), use_buffers=True)
    with torch.no_grad():
        model.weight.fill_(2.0)  # the model moves away from its initial weights (1.0)
    for _ in range(50):
        averaged.update_parameters(model)
    # a flat 0.998 would still sit 90% of the way back at the initial weights after 50 updates
    assert float(averaged.module.weight.detach().mean()) > 1.9
    assert int(averaged.module.num_batches_tracked) == int(model.num_batches_tracked)
    first, late = ema_with_warmup(0.998), ema_with_warmup(0.998)
    a, b = [torch.zeros(1)], [torch.zeros(1)]
    first(a, [torch.ones(1)], torch.tensor(1))
    late(b, [torch.ones(1)], torch.tensor(100_000))
    assert float(a[0]) == pytest.approx(1 - 2 / 11)  # decay (1 + n) / (10 + n) at n = 1
    assert float(b[0]) == pytest.approx(0.002)  # capped at the set decay
