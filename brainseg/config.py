"""The pipeline's settings, in one place: ``weights/pipeline.json`` (chosen on the validation patients by
``brainseg tune``), with neutral fallbacks for a weights folder that has none."""
from __future__ import annotations

import json
from pathlib import Path

from brainseg.paths import WEIGHTS_DIR

PIPELINE_FILE = "pipeline.json"
FALLBACK = {"seg_threshold": 0.5, "gate": 0.5, "min_area": 0, "largest_3d_component": False, "uncertainty": "flips"}


def mask_settings(threshold: float, gate: float, min_area: int, largest_3d: bool) -> dict:
    """Settings that make masks, under ``pipeline.json``'s names (recorded in reports and DICOM SEGs)."""
    return {"seg_threshold": threshold, "gate": gate, "min_area": min_area, "largest_3d_component": largest_3d}


def pipeline_settings(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """``seg_threshold``, ``gate``, ``min_area``, ``largest_3d_component`` (volumes keep only their largest 3D
    tumour) and ``uncertainty`` (the app's default source), plus the record of where they were chosen."""
    path = Path(weights_dir) / PIPELINE_FILE
    settings = dict(FALLBACK)
    if path.exists():
        settings.update(json.loads(path.read_text()))
    return settings
