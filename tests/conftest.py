"""Shared fixtures: the real Kaggle files and an unpacked kaggle_3m folder (restored from ../shared/lgg)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BRAINSEG_SHARED", ROOT.parent / "shared"))
ORIGINALS = SHARED / "lgg" / "original"
FOREIGN = SHARED / "foreign"


@pytest.fixture(scope="session")
def originals() -> Path:
    """The four byte-exact Kaggle .tif files (two slices, two masks)."""
    assert ORIGINALS.is_dir(), f"{ORIGINALS} is missing: tests need ../shared beside the repo"
    return ORIGINALS


@pytest.fixture(scope="session")
def kaggle_dir() -> Path:
    """A kaggle_3m folder: $BRAINSEG_TEST_DATA if set (CI restores it), else restored here once."""
    given = os.environ.get("BRAINSEG_TEST_DATA")
    if given:
        return Path(given)
    dest = Path(os.environ.get("TMPDIR", "/tmp")) / "brainseg-test-data"
    subprocess.run([sys.executable, str(SHARED / "lgg" / "unpack.py"), str(dest)], check=True)
    return dest / "kaggle_3m"
