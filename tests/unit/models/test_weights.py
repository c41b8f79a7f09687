"""Weights integrity: the shipped files match weights/SHA256SUMS; damaged, missing and pickled files are refused."""
from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest

from brainseg.cli import main
from brainseg.errors import BrainsegError
from brainseg.inference.predictor import Predictor
from brainseg.models.checksums import check_checksums, write_checksums
from brainseg.models.weights import CHECKSUMS, ENSEMBLE, load_model, read_checksums, segmenter_files
from brainseg.paths import WEIGHTS_DIR

PACKAGE = Path(__file__).resolve().parents[3] / "brainseg"


class _WritesFile:
    """A pickle payload: unpickling it creates ``path`` (what a hostile checkpoint would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture()
def weights_copy(tmp_path: Path) -> Path:
    """The shipped weights files with their SHA256SUMS, copied to a scratch folder."""
    for path in [*WEIGHTS_DIR.glob("*.safetensors"), WEIGHTS_DIR / CHECKSUMS]:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_shipped_weights_match_their_checksums():
    listed = read_checksums(WEIGHTS_DIR)
    assert {"segmenter.safetensors", "classifier.safetensors"} <= set(listed)
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in listed.values())
    assert check_checksums(WEIGHTS_DIR) == sorted(listed)


def test_a_flipped_byte_is_refused(weights_copy: Path):
    path = weights_copy / "segmenter.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01          # one bit inside the tensor data: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(BrainsegError, match=r"segmenter\.safetensors: SHA-256 does not match"):
        load_model(path)
    with pytest.raises(BrainsegError, match=r"segmenter\.safetensors: SHA-256 does not match"):
        check_checksums(weights_copy)
    with pytest.raises(BrainsegError, match="segmenter.safetensors"):
        Predictor(weights_copy, device="cpu")


def test_a_missing_weights_file_is_refused(weights_copy: Path):
    (weights_copy / "segmenter.safetensors").unlink()
    with pytest.raises(BrainsegError, match=r"segmenter\.safetensors: weights file not found"):
        Predictor(weights_copy, device="cpu")
    with pytest.raises(BrainsegError, match=r"segmenter\.safetensors: listed in SHA256SUMS but missing"):
        check_checksums(weights_copy)


def test_an_unlisted_weights_file_fails_the_check(weights_copy: Path):
    shutil.copy(weights_copy / "segmenter.safetensors", weights_copy / "extra.safetensors")
    with pytest.raises(BrainsegError, match=r"extra\.safetensors: not listed in SHA256SUMS"):
        check_checksums(weights_copy)
    write_checksums(weights_copy)
    assert "extra.safetensors" in check_checksums(weights_copy)


def test_a_pickle_disguised_as_weights_is_never_unpickled(weights_copy: Path, tmp_path: Path):
    control, marker = tmp_path / "control", tmp_path / "marker"
    pickle.loads(pickle.dumps(_WritesFile(control)))
    assert control.exists(), "the payload must be live for this test to mean anything"
    (weights_copy / "segmenter.safetensors").write_bytes(pickle.dumps(_WritesFile(marker)))
    write_checksums(weights_copy)         # even with a matching checksum the file is refused
    with pytest.raises(BrainsegError, match=r"segmenter\.safetensors: not a readable safetensors"):
        load_model(weights_copy / "segmenter.safetensors")
    assert not marker.exists()


def test_the_package_never_unpickles():
    """No pickle anywhere; torch.load only with weights_only=True (train.py resuming its own checkpoint)."""
    offenders, modules = [], sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30, "the package's modules were not found"
    for path in modules:
        for line in path.read_text().splitlines():
            unsafe_load = "torch.load(" in line and "weights_only=True" not in line
            if unsafe_load or re.search(r"\bpickle\b|\bjoblib\b|\bdill\b", line):
                offenders.append(f"{path.relative_to(PACKAGE)}: {line.strip()}")
    assert offenders == []


def test_checksums_command_writes_and_checks(weights_copy: Path, capsys):
    (weights_copy / CHECKSUMS).unlink()
    assert main(["checksums", "--dir", str(weights_copy)]) == 0
    assert main(["checksums", "--check", "--dir", str(weights_copy)]) == 0
    (weights_copy / "classifier.safetensors").write_bytes(b"not the weights")
    assert main(["checksums", "--check", "--dir", str(weights_copy)]) == 2
    assert "classifier.safetensors: SHA-256 does not match" in capsys.readouterr().err


def test_an_ensemble_listing_names_the_segmenters(weights_copy: Path):
    assert segmenter_files(weights_copy) == [weights_copy / "segmenter.safetensors"]
    shutil.copy(WEIGHTS_DIR / "folds" / "fold0.safetensors", weights_copy / "fold0.safetensors")
    (weights_copy / ENSEMBLE).write_text('{"members": ["segmenter.safetensors", "fold0.safetensors"]}')
    assert Predictor(weights_copy, device="cpu", precision="fp32").members == 2


@pytest.mark.parametrize("listing, message", [("{", "expected"), ('{"members": []}', "non-empty"),
                                              ('{"members": ["missing.safetensors"]}', "not found")])
def test_a_broken_ensemble_listing_is_refused(weights_copy: Path, listing: str, message: str):
    (weights_copy / ENSEMBLE).write_text(listing)
    with pytest.raises(BrainsegError, match=message):
        Predictor(weights_copy, device="cpu", precision="fp32")
