"""``python -m brainseg predict`` on a mixed batch (a Kaggle .tif, a foreign web JPEG, a corrupt file) and on
volumes."""
from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from PIL import Image

from brainseg.cli import main
from brainseg.config import pipeline_settings
from brainseg.data.index import index_patient
from brainseg.evaluation.encodings import dicom_series
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR
from brainseg.predict import COLUMNS, CSV_NAME

PATIENT = SAMPLES_DIR / "TCGA_HT_7686_19950629"   # 20 slices, with tumour


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
    records = index_patient(PATIENT)
    stored = np.stack([read_slice(r.image_path) for r in records]).transpose(2, 1, 0, 3)
    affine = np.diag([-0.94, -0.94, 3.3, 1.0])
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(gzip.compress(nib.Nifti1Image(stored, affine).to_bytes()))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(scan.read_bytes()[:5000])
    out = tmp_path / "out"

    code = main(["predict", str(scan), str(broken), "--out", str(out), "--probabilities"])

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
    probabilities = nib.load(out / "scan_probabilities.nii.gz")
    assert probabilities.shape == stored.shape[:3] and np.allclose(probabilities.affine, affine)
    assert_raw_probabilities(probabilities, np.asarray(mask.dataobj, bool))
    assert not list(out.glob("*_seg.dcm")) and not (out / "broken_probabilities.nii.gz").exists()


def assert_raw_probabilities(image: nib.Nifti1Image, mask: np.ndarray) -> None:
    """float32 in [0, 1] on the mask's voxels; the mask is the map at the threshold less what the gate, the minimum
    area and the largest 3D tumour removed, so it lies inside the thresholded map and keeps most of it."""
    assert image.get_data_dtype() == np.float32
    values = np.asarray(image.dataobj)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    above = values >= pipeline_settings()["seg_threshold"]
    assert mask.any() and not (mask & ~above).any()
    assert mask.sum() >= 0.5 * above.sum()


def test_predict_writes_a_dicom_seg_and_probabilities_for_a_dicom_zip_and_folder(tmp_path: Path) -> None:
    flair = np.stack([read_slice(r.image_path)[..., 1] for r in index_patient(PATIENT)]).astype(np.uint16) * 16
    archive = tmp_path / "series.zip"
    archive.write_bytes(dicom_series(flair, slope=0.5, intercept=-20))
    folder = tmp_path / "folder"
    folder.mkdir()
    zipfile.ZipFile(archive).extractall(folder)
    out = tmp_path / "out"

    assert main(["predict", str(archive), str(folder), "--out", str(out), "--probabilities"]) == 0

    with open(out / CSV_NAME, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        assert {row["mask_nifti"] for row in reader} == {"series_mask.nii.gz", "folder_mask.nii.gz"}
    instances = {pydicom.dcmread(path).SOPInstanceUID: index for index, path in enumerate(sorted(folder.iterdir()))}
    for stem in ("series", "folder"):
        mask = np.asarray(nib.load(out / f"{stem}_mask.nii.gz").dataobj, bool)    # slice, row, column as stored
        assert_raw_probabilities(nib.load(out / f"{stem}_probabilities.nii.gz"), mask)
        seg = hd.seg.segread(out / f"{stem}_seg.dcm")
        referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert {item.ReferencedSOPInstanceUID for item in referenced} == set(instances)
        frames = np.zeros_like(mask)
        pixels = seg.pixel_array.reshape(-1, *mask.shape[1:])
        for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
            frames[instances[group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]] = frame
        assert np.array_equal(frames, mask), "the SEG and the NIfTI mask differ"


def test_a_512x512_flair_of_an_exported_study_reads_like_the_training_data(tmp_path: Path, capsys) -> None:
    """A scanner's matrix is storage (``check.assess.judge_size``); of a study's series, FLAIR is taken and said."""
    flair = np.stack([np.asarray(Image.fromarray(read_slice(r.image_path)[..., 1]).resize((512, 512), Image.BICUBIC))
                      for r in index_patient(PATIENT)]).astype(np.uint16) * 16
    with zipfile.ZipFile(io.BytesIO(dicom_series(flair, slope=0.5, intercept=-20))) as series:
        files = [(f"FLAIR/{n}", series.read(n)) for n in series.namelist()]
    for index, (_, data) in enumerate(files[:3]):                                    # and three slices of a T2
        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.SeriesInstanceUID, dataset.SeriesDescription = "1.2.3.4", "t2_tse_tra"
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        files.append((f"T2/{index}.dcm", buffer.getvalue()))
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as study:
        for name, data in files:
            study.writestr(name, data)
    out = tmp_path / "out"

    assert main(["predict", str(archive), "--out", str(out)]) == 0
    assert "taken, the one series of 2 named FLAIR" in capsys.readouterr().err

    with open(out / CSV_NAME, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(flair) and {row["verdict"] for row in rows} == {"ok"}
    mask = np.asarray(nib.load(out / "study_mask.nii.gz").dataobj)
    assert mask.shape[1:] == (512, 512) and mask.any()


def test_predict_writes_a_one_slice_probability_nifti_for_a_slice_file(tmp_path: Path) -> None:
    image = PATIENT / "TCGA_HT_7686_19950629_12.tif"
    out = tmp_path / "out"

    assert main(["predict", str(image), "--out", str(out), "--probabilities"]) == 0

    probabilities = nib.load(out / "TCGA_HT_7686_19950629_12_probabilities.nii.gz")
    assert probabilities.shape == (1, 256, 256)
    mask = np.asarray(Image.open(io.BytesIO((out / "TCGA_HT_7686_19950629_12_mask.png").read_bytes()))) > 0
    assert_raw_probabilities(probabilities, mask[None])
