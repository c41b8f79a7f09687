"""``python -m brainseg predict`` on a mixed batch (a Kaggle .tif, a foreign web JPEG, a corrupt file) and on
volumes."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from brainseg.cli import main
from brainseg.data.index import index_patient
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR
from brainseg.predict import CSV_NAME


def test_predict_writes_csv_and_pngs_for_a_mixed_batch(originals: Path, foreign: Path, tmp_path: Path,
                                                       capsys) -> None:
    good = originals / "TCGA_CS_4942_19970222_11.tif"
    foreign = foreign / "mri_tumour_glioma_axial_224.jpg"
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


def test_predict_accepts_volumes_and_writes_a_mask_nifti_beside_the_csv(tmp_path: Path, capsys) -> None:
    records = index_patient(SAMPLES_DIR / "TCGA_HT_7686_19950629")
    stored = np.stack([read_slice(r.image_path) for r in records]).transpose(2, 1, 0, 3)
    affine = np.diag([-0.94, -0.94, 3.3, 1.0])
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(gzip.compress(nib.Nifti1Image(stored, affine).to_bytes()))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(scan.read_bytes()[:5000])
    out = tmp_path / "out"

    code = main(["predict", str(scan), str(broken), "--out", str(out)])

    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert any("broken.nii.gz" in line and "truncated" in line for line in errors)
    with open(out / CSV_NAME, newline="") as handle:
        rows = list(csv.DictReader(handle))
    volume_rows = [r for r in rows if Path(r["file"]).name == "scan.nii.gz"]
    assert [int(r["slice"]) for r in volume_rows] == list(range(1, len(records) + 1))
    assert {r["mask_nifti"] for r in volume_rows} == {"scan_mask.nii.gz"}
    mask = nib.load(out / "scan_mask.nii.gz")
    assert mask.shape == stored.shape[:3] and np.allclose(mask.affine, affine)
    areas = np.asarray(mask.dataobj).sum(axis=(0, 1))
    assert [int(a) for a in areas] == [int(r["predicted_area_px"]) for r in volume_rows] and areas.sum() > 0
    assert rows[-1]["error"] and Path(rows[-1]["file"]).name == "broken.nii.gz"
