"""``python -m brainseg predict`` on a mixed batch: a Kaggle .tif, a foreign web JPEG and a corrupt file."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg.__main__ import main
from brainseg.predict import CSV_NAME


def test_predict_writes_csv_and_pngs_for_a_mixed_batch(originals: Path, tmp_path: Path, capsys) -> None:
    good = originals / "TCGA_CS_4942_19970222_11.tif"
    foreign = originals.parent.parent / "foreign" / "mri_tumour_glioma_axial_224.jpg"
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(good.read_bytes()[:3000])
    out = tmp_path / "out"

    code = main(["predict", str(good), str(foreign), str(corrupt), "--out", str(out)])

    assert code != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert any("corrupt.tif" in line for line in errors)
    with open(out / CSV_NAME, newline="") as handle:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(handle)}
    assert list(rows) == [good.name, foreign.name, corrupt.name]
    assert rows[good.name]["verdict"] == "ok" and rows[good.name]["error"] == ""
    assert rows[foreign.name]["verdict"] in ("caution", "foreign") and "224x224" in rows[foreign.name]["reasons"]
    assert rows[corrupt.name]["error"] and rows[corrupt.name]["verdict"] == ""
    for name, size in ((good.name, (256, 256)), (foreign.name, (224, 224))):
        row = rows[name]
        assert 0.0 <= float(row["tumour_probability"]) <= 1.0
        assert float(row["check_score"]) > 0
        mask = Image.open(out / row["mask_png"])
        assert mask.size == size
        assert int(row["predicted_area_px"]) == int((np.asarray(mask) > 0).sum())
        assert Image.open(out / row["overlay_png"]).size == size
