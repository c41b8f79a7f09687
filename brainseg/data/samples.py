"""``python -m brainseg samples``: copy a few test-split patients into ``samples/``, losslessly compressed.

The bundled gallery of a fresh clone. Slices are re-encoded as deflate TIFF (pixels unchanged, read back by
``brainseg.io.slices``), in the Kaggle layout ``samples/<patient>/<patient>_<n>.tif`` and ``_mask.tif``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg.data.index import by_patient, index_dataset, load_split
from brainseg.errors import BrainsegError
from brainseg.io.slices import read_mask, read_slice
from brainseg.paths import WEIGHTS_DIR





def write_compressed(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, compression="tiff_adobe_deflate")


