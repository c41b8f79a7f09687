"""Shipped weights: save a model as safetensors with its build settings, load it back safely.

Nothing is unpickled: tensors come from safetensors and settings from its string metadata. Where a
``SHA256SUMS`` file sits beside the weights, the file's hash must match it before anything is loaded.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from brainseg.errors import BrainsegError

if TYPE_CHECKING:   # torch is imported by the functions that build or save modules: checking a file needs none
    import torch
    from torch import nn

CHECKSUMS = "SHA256SUMS"
ENSEMBLE = "ensemble.json"   # when present: the segmenter is the mean of the members it lists


def save_weights(model: nn.Module, path: str | Path, kind: str, settings: dict, half: bool = True) -> None:
    """Write ``model``'s state (fp16 floats when ``half``) with ``kind`` and build ``settings`` as metadata.

    Args:
        model: the module whose ``state_dict`` is saved (copied to the CPU).
        path: the safetensors file to write.
        kind: the model's kind (e.g. ``"segmenter"`` or ``"classifier"``), stored as metadata.
        settings: the build settings, stored as JSON metadata.
        half: store floating-point tensors as fp16.
    """
    from safetensors.torch import save_file
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"kind": kind, "settings": json.dumps(settings)})


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` from ``folder/SHA256SUMS`` (``sha256sum`` format); empty when absent."""
    sums = folder / CHECKSUMS
    if not sums.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip())
    return {name.strip().lstrip("*"): digest for digest, name in pairs}


def write_checksum_file(folder: Path, sums: dict[str, str]) -> Path:
    """Write ``{file name: sha256}`` to ``folder/SHA256SUMS`` (``sha256sum`` format, sorted by name)."""
    path = folder / CHECKSUMS
    path.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())))
    return path


def record_checksum(path: Path) -> None:
    """Add or replace ``path``'s line in its folder's SHA256SUMS, for a file this package has just written."""
    write_checksum_file(path.parent, {**read_checksums(path.parent), path.name: sha256(path)})


def verify(path: Path) -> str:
    """The SHA-256 of a weights file; refuses one that is missing or does not match its recorded SHA-256."""
    if not path.is_file():
        raise BrainsegError(f"{path}: weights file not found; expected the trained weights shipped in weights/")
    expected, actual = read_checksums(path.parent).get(path.name), sha256(path)
    if expected is not None and actual != expected:
        raise BrainsegError(f"{path}: SHA-256 does not match {CHECKSUMS}; the weights file is damaged or replaced")
    return actual


def segmenter_files(weights_dir: Path) -> list[Path]:
    """The segmenter's weights files: the members listed in ``weights_dir/ensemble.json`` (``{"members": [paths
    relative to weights_dir]}``) when an ensemble ships, else ``segmenter.safetensors`` alone."""
    listing = Path(weights_dir) / ENSEMBLE
    if not listing.is_file():
        return [Path(weights_dir) / "segmenter.safetensors"]
    try:
        members = json.loads(listing.read_text())["members"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BrainsegError(f"{listing}: expected {{\"members\": [weights files]}} ({err})") from None
    if not members or not all(isinstance(m, str) for m in members):
        raise BrainsegError(f"{listing}: 'members' must be a non-empty list of weights file names")
    return [Path(weights_dir) / member for member in members]


def combined_digest(digests: list[str]) -> str:
    """One SHA-256 for several weights files in order; a single file keeps its own."""
    return digests[0] if len(digests) == 1 else hashlib.sha256("\0".join(digests).encode()).hexdigest()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the model named in the file's metadata, load its weights as fp32, and return it in eval mode."""
    from safetensors.torch import load_file

    from brainseg.models.networks import build_model
    path = Path(path)
    verify(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BrainsegError(f"{path}: not a readable safetensors weights file ({err})") from None
    if "kind" not in metadata:
        raise BrainsegError(f"{path}: no 'kind' in its metadata; expected weights saved by brainseg")
    settings = json.loads(metadata.get("settings", "{}"))
    model = build_model(metadata["kind"], **settings)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval(), {"kind": metadata["kind"], **settings}
