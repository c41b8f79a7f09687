"""Where brainseg finds its files, and the environment variables that move them.

Weights: ``$BRAINSEG_WEIGHTS`` when set, else the ``weights/`` installed inside the package (``pip install .``),
else the repository's ``weights/`` (a source checkout). The bundled gallery, the dataset and the OpenVINO cache
follow the same pattern.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPOSITORY_DIR = PACKAGE_DIR.parent

WEIGHTS_ENV = "BRAINSEG_WEIGHTS"      # a folder of shipped weights and their JSON files
DATA_ENV = "BRAINSEG_DATA"            # a kaggle_3m folder: the gallery, training and evaluation read it
CACHE_ENV = "BRAINSEG_CACHE_DIR"      # where converted OpenVINO models are kept
DEFAULT_DATA = Path("data/kaggle_3m")


def _installed_or_checkout(installed: str, checkout: str) -> Path:
    inside = PACKAGE_DIR / installed
    return inside if inside.is_dir() else REPOSITORY_DIR / checkout


def weights_dir() -> Path:
    """The weights folder: ``$BRAINSEG_WEIGHTS``, the installed package's, or the checkout's ``weights/``."""
    named = os.environ.get(WEIGHTS_ENV)
    return Path(named).expanduser() if named else _installed_or_checkout("_weights", "weights")


def cache_root() -> Path:
    """Where converted models are kept: ``$BRAINSEG_CACHE_DIR`` or ``~/.cache/brainseg``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "brainseg")


WEIGHTS_DIR = weights_dir()
SAMPLES_DIR = _installed_or_checkout("_samples", "samples")   # a few test-split patients for the gallery
