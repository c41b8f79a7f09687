"""``python -m brainseg samples``: copy a few test-split patients into ``samples/``, losslessly compressed.

The bundled gallery of a fresh clone. Slices are re-encoded as deflate TIFF (pixels unchanged, read back by
``brainseg.io.slices``), in the Kaggle layout ``samples/<patient>/<patient>_<n>.tif`` and ``_mask.tif``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_compressed(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, compression="tiff_adobe_deflate")


