"""``python -m brainseg checksums``: write or check ``weights/SHA256SUMS`` (``sha256sum`` format).

The loader (:func:`brainseg.models.weights.verify`) refuses a weights file whose hash differs from this list;
run ``python -m brainseg checksums`` after replacing any weights file, and ``--check`` to verify them all.
"""
from __future__ import annotations

from pathlib import Path

from brainseg.errors import BrainsegError
from brainseg.models.weights import CHECKSUMS, read_checksums, sha256, write_checksum_file
from brainseg.paths import WEIGHTS_DIR

WEIGHT_PATTERN = "*.safetensors"


def write_checksums(folder: str | Path = WEIGHTS_DIR) -> Path:
    """Hash every ``*.safetensors`` in ``folder`` into ``folder/SHA256SUMS``; return its path."""
    folder = Path(folder)
    files = sorted(folder.glob(WEIGHT_PATTERN))
    if not files:
        raise BrainsegError(f"{folder}: no {WEIGHT_PATTERN} files to hash; expected the trained weights")
    return write_checksum_file(folder, {file.name: sha256(file) for file in files})


def check_checksums(folder: str | Path = WEIGHTS_DIR) -> list[str]:
    """Names of the verified files; raises BrainsegError naming every missing, unlisted or mismatching file."""
    folder = Path(folder)
    expected = read_checksums(folder)
    if not expected:
        raise BrainsegError(f"{folder / CHECKSUMS}: missing or empty; run 'python -m brainseg checksums'")
    listed_or_present = sorted(set(expected) | {file.name for file in folder.glob(WEIGHT_PATTERN)})
    problems = []
    for name in listed_or_present:
        path = folder / name
        if name not in expected:
            problems.append(f"{path}: not listed in {CHECKSUMS}")
        elif not path.is_file():
            problems.append(f"{path}: listed in {CHECKSUMS} but missing")
        elif sha256(path) != expected[name]:
            problems.append(f"{path}: SHA-256 does not match {CHECKSUMS}")
    if problems:
        raise BrainsegError("; ".join(problems))
    return listed_or_present




