"""The command line: user errors are one line on stderr, exit code 2, no traceback, naming the path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainseg.cli import main

ROOT = Path(__file__).resolve().parents[3]


def one_line_error(stderr: str, *names: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for name in names:
        assert name in lines[0]
    return lines[0]


def run_main(capsys: pytest.CaptureFixture, *arguments: str) -> str:
    """``python -m brainseg ARGUMENTS`` in this process: its exit code must be 2; returns stderr."""
    assert main(list(arguments)) == 2
    return capsys.readouterr().err


def test_missing_data_folder_as_a_real_process(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_kaggle_3m"
    result = subprocess.run([sys.executable, "-m", "brainseg", "evaluate", "--data", str(missing)], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    one_line_error(result.stderr, str(missing))
    assert result.stdout == ""


def test_evaluate_data_path_is_a_file(capsys: pytest.CaptureFixture, sample_slice: Path) -> None:
    path = sample_slice
    one_line_error(run_main(capsys, "evaluate", "--data", str(path)), str(path))


def test_evaluate_without_any_data_folder(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    one_line_error(run_main(capsys, "evaluate"), "BRAINSEG_DATA", "--data")


@pytest.fixture(scope="module")
def one_patient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one") / "kaggle_3m"
    folder.mkdir()
    patient = "TCGA_HT_7686_19950629"                  # a shipped sample patient
    (folder / patient).symlink_to(ROOT / "samples" / patient, target_is_directory=True)
    return folder


def test_evaluate_missing_split_file(capsys: pytest.CaptureFixture, one_patient: Path, tmp_path: Path) -> None:
    split = tmp_path / "missing_split.json"
    one_line_error(run_main(capsys, "evaluate", "--data", str(one_patient), "--split-file", str(split)), str(split))


def test_evaluate_missing_weights(capsys: pytest.CaptureFixture, one_patient: Path, tmp_path: Path) -> None:
    weights = tmp_path / "no_weights"
    weights.mkdir()
    stderr = run_main(capsys, "evaluate", "--data", str(one_patient), "--split", "all", "--weights", str(weights))
    one_line_error(stderr, str(weights))


def test_train_missing_data_folder(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    stderr = run_main(capsys, "train", "segmenter", "--data", str(missing), "--out", str(tmp_path / "run"))
    one_line_error(stderr, str(missing))


def test_unknown_command_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["segment"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_encodings_with_a_reference_that_is_not_its_json(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text('{"encodings": 3}')
    one_line_error(run_main(capsys, "encodings", "--data", str(tmp_path), "--reference", str(reference)),
                   str(reference))


def test_encodings_with_a_reference_of_other_patients(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text('{"reference": {"per_patient": {"FLAIR, uint8 NIfTI": {"TCGA_X": 0.5}}}}')
    one_line_error(run_main(capsys, "encodings", "--data", str(tmp_path), "--reference", str(reference)),
                   str(reference), "same split")


@pytest.mark.parametrize(("option", "value", "says"), [("--gamma", "0.8", "at least 1"),
                                                        ("--flair-alone", "25", "from 0 to 1")])
def test_train_refuses_augmentation_settings_out_of_range(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                          option: str, value: str, says: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "segmenter", "--data", str(tmp_path), "--out", str(tmp_path / "run"), option, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in error and says in error and "Traceback" not in error
