"""The volume viewer through ``streamlit.testing.v1.AppTest``: three linked planes and the tumour's size, for a
gallery patient (no spacing: voxels) and an uploaded anisotropic NIfTI (mL), and a share link keeping the position.
The app runs on the bundled ``samples/`` (no ``BRAINSEG_DATA``)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from brainseg.app import cache
from brainseg.config import pipeline_settings
from brainseg.data.index import by_patient, index_dataset, index_patient
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
VOLUME_PAGE = "brainseg/app/pages/volume.py"
PATIENT = "TCGA_HT_7686_19950629"          # a bundled test-split patient: 20 slices of 256x256
PLANE_TITLES = ("Axial · slice ", "Coronal · row ", "Sagittal · column ")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(APP, default_timeout=300)


def ran(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def plane_captions(at: AppTest) -> list[str]:
    return [image.captions[0] for image in at.image if image.captions[0].startswith(PLANE_TITLES)]


def measured(at: AppTest) -> dict[str, dict[str, str]]:
    """The measurement table's rows by tumour ("predicted", "true"), each cell by its column's title."""
    table = next(m.value for m in at.markdown if m.value.startswith("| tumour |"))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    return {row[0]: dict(zip(rows[0][1:], row[1:])) for row in rows[2:]}


def predicted_voxels(at: AppTest, slices) -> int:
    """The pipeline's predicted voxels of ``slices`` at the session's settings."""
    state = at.session_state
    masks = slices.masks(state.threshold, state.gate, pipeline_settings()["min_area"], state.largest_3d)
    return int(sum(m.sum() for m in masks))


def test_a_gallery_patient_shows_three_planes_and_its_size_in_voxels(app: AppTest) -> None:
    ran(app.run())
    number = app.session_state.slice
    row, column = app.session_state.row, app.session_state.col
    assert plane_captions(app) == [f"Axial · slice {number}", f"Coronal · row {row} of 256",
                                   f"Sagittal · column {column} of 256"]
    assert any("spacing unknown" in c.value for c in app.caption)
    assert any(c.value.startswith("Spacing unknown, voxels:") for c in app.caption)
    table = measured(app)
    assert list(table) == ["predicted", "true"]                  # the gallery has masks
    slices = cache.patient_slices(str(SAMPLES_DIR), app.session_state.patient)
    assert table["predicted"]["volume"] == f"{predicted_voxels(app, slices):,} voxels"
    assert table["true"]["volume"] == f"{int(sum(t.sum() for t in slices.truths)):,} voxels"
    assert table["predicted"]["extent (L-R x A-P x S-I)"].endswith(" voxels")
    assert table["predicted"]["hemisphere"] in ("left", "right", "both")


def test_a_share_link_with_a_position_restores_it(app: AppTest) -> None:
    samples = by_patient(index_dataset(SAMPLES_DIR))
    patient = sorted(samples)[-1]
    number = samples[patient][4].number
    app.query_params.update(patient=patient, slice=str(number), row="101", col="57")
    ran(app.run())
    assert (app.session_state.slice, app.session_state.row, app.session_state.col) == (number, 101, 57)
    assert plane_captions(app) == [f"Axial · slice {number}", "Coronal · row 101 of 256",
                                   "Sagittal · column 57 of 256"]
    ran(app.slider(key="col").set_value(140).run())
    assert app.query_params["col"] == "140" and app.query_params["row"] == "101"
    assert plane_captions(app)[2] == "Sagittal · column 140 of 256"
    # the address bar's link in a fresh session opens the same position
    link = {key: app.query_params[key] for key in ("patient", "slice", "row", "col")}
    fresh = AppTest.from_file(APP, default_timeout=300)
    fresh.query_params.update(link)
    ran(fresh.run())
    assert plane_captions(fresh) == [f"Axial · slice {number}", "Coronal · row 101 of 256",
                                     "Sagittal · column 140 of 256"]
    # a position outside the slices falls back to the shown slice's tumour (or its centre)
    outside = AppTest.from_file(APP, default_timeout=300)
    outside.query_params.update(patient=patient, slice=str(number), row="999", col="0")
    ran(outside.run())
    assert 1 <= outside.session_state.row <= 256 and 1 <= outside.session_state.col <= 256


def test_an_uploaded_anisotropic_nifti_shows_three_planes_to_scale_and_a_volume_in_ml(app: AppTest) -> None:
    records = index_patient(SAMPLES_DIR / PATIENT)
    display = np.stack([read_slice(r.image_path) for r in records])       # slice, row (->P), column (->L)
    stored = np.ascontiguousarray(display.transpose(2, 1, 0, 3))           # x ->L, y ->P, z ->S: LPS
    nifti = nib.Nifti1Image(stored, np.diag([-1.0, -1.0, 3.0, 1.0])).to_bytes()
    ran(app.run()).switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value([("scan.nii", nifti, "application/octet-stream")])
    ran(app.run())
    assert [c.split(" · ")[0] for c in plane_captions(app)] == ["Axial", "Coronal", "Sagittal"]
    assert any("drawn to scale: voxels of 3.00 x 1.00 x 1.00 mm" in c.value for c in app.caption)
    table = measured(app)
    voxels = predicted_voxels(app, app.session_state["volume_upload"][2])
    assert voxels > 0 and list(table) == ["predicted"]          # no mask uploaded: nothing "true"
    assert table["predicted"]["volume"] == f"{voxels * 3.0 / 1000:.1f} mL"
    assert table["predicted"]["extent (L-R x A-P x S-I)"].endswith(" mm")
    assert any(c.value.startswith("Volume: voxels times the voxel's volume") for c in app.caption)
    ran(app.slider(key="vol_row").set_value(30).run())
    assert plane_captions(app)[1] == "Coronal · row 30 of 256"
    app.toggle(key="vol_patient_3d").set_value(True).run()
    ran(app)
    figure = app.get("plotly_chart")[0].proto.spec
    assert '"true_voxels":null' in figure.replace(" ", "") and "true tumour" not in figure


def test_a_plain_flair_scan_at_a_scanners_512x512_reads_like_the_training_data(app: AppTest) -> None:
    """The issue-32 scan at a clinic's matrix: FLAIR alone, int16, 512x512 (the size the models resize away)."""
    from PIL import Image
    records = index_patient(SAMPLES_DIR / PATIENT)
    flair = np.stack([np.asarray(Image.fromarray(read_slice(r.image_path)[..., 1]).resize((512, 512), Image.BICUBIC))
                      for r in records]).astype(np.int16) * 12 + 40
    nifti = nib.Nifti1Image(np.ascontiguousarray(flair.transpose(2, 1, 0)), np.diag([-0.45, -0.45, 3.3, 1])).to_bytes()
    ran(app.run()).switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value([("flair.nii", nifti, "application/octet-stream")])
    ran(app.run())
    assert any(c.value == f"Input check: all {len(records)} slices like the training data." for c in app.caption)
    assert not [w.value for w in app.warning if "unlike the training data" in w.value
                or "differs from the training slices" in w.value]
