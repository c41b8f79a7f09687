"""Volume post-processing: keep only the largest 3D connected tumour of a patient's stacked masks.

The dataset author's pipeline (Buda et al. 2019) does this on whole patients; ``crossval`` measures whether it
helps on the out-of-fold patients and ``weights/pipeline.json`` (``largest_3d_component``) says whether the
gallery, uploaded volumes, ``predict`` and ``evaluate``'s pipeline figures use it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def largest_component_3d(masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``DxHxW bool``: only the largest 26-connected component of the stacked ``HxW`` masks (all of them when
    there are fewer than two components)."""
    volume = np.asarray(np.stack(list(masks)) if len(masks) else np.zeros((0, 1, 1)), bool)
    labels, count = ndimage.label(volume, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return volume
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)
