"""The app's explanations and input check through ``streamlit.testing.v1.AppTest``, on real files and weights.

LayerCAM and flip TTA panels, the patient in 3D with its area profile, summary and downloads, and the
caution above foreign uploads. The app runs on the bundled ``samples/`` (no ``BRAINSEG_DATA``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from brainseg.app import cache
from brainseg.config import pipeline_settings
from brainseg.data.index import by_patient, index_dataset
from brainseg.figures import report
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT_S = 300
UPLOAD = "brainseg/app/pages/upload.py"
FOUR_PANELS = ["MRI slice (FLAIR channel)", "True mask", "Predicted mask", "Overlay"]
HEAT_MAP_CAPTION = "Why: where the classifier saw tumour (LayerCAM)"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A fresh session of the page on the bundled samples, already run once."""
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def samples() -> dict:
    return by_patient(index_dataset(SAMPLES_DIR))


def captions(at: AppTest) -> list[str]:
    """The captions of the slice's panels (not the volume's three planes below them)."""
    return [image.captions[0] for image in at.image
            if not image.captions[0].startswith(("Axial · ", "Coronal · ", "Sagittal · "))]


def gallery_figures(at: AppTest) -> list[dict]:
    """The plotly figures of the gallery page, as JSON."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def area_profiles(at: AppTest) -> list[pd.DataFrame]:
    """The Vega-Lite area profiles of the page: their data (Streamlit sends it as Arrow beside the spec)."""
    return [pa.ipc.open_stream(chart.proto.data.data).read_pandas() for chart in at.get("vega_lite_chart")]


def download_labels(at: AppTest) -> list[str]:
    return [button.proto.label for button in at.get("download_button")]


def test_heat_map_and_tta_toggles_add_their_panels(app: AppTest) -> None:
    assert captions(app) == FOUR_PANELS
    app.toggle(key="heat_map").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    assert captions(app) == FOUR_PANELS + [HEAT_MAP_CAPTION]
    area_plain = next(m.value for m in app.metric if m.label == "Predicted area")
    app.toggle(key="tta").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    shown = captions(app)
    assert shown[:5] == FOUR_PANELS + [HEAT_MAP_CAPTION] and shown[5].startswith("Uncertainty: share of the 4 flips")
    assert any(c.value.startswith("Flip TTA on:") for c in app.caption)
    # the slice's metrics now come from the averaged map: still a tumour on this clear tumour slice
    area_tta = next(m.value for m in app.metric if m.label == "Predicted area")
    assert area_tta != "0 px" and area_plain != "0 px"
    app.toggle(key="heat_map").set_value(False).run()
    app.toggle(key="tta").set_value(False).run()
    assert captions(app) == FOUR_PANELS


def test_patient_in_3d_draws_the_volume_profile_summary_and_downloads(app: AppTest, samples: dict) -> None:
    patient, number = app.session_state.patient, app.session_state.slice
    assert (len(gallery_figures(app)), len(area_profiles(app))) == (0, 1)
    assert "Patient summary (CSV)" not in download_labels(app)
    app.toggle(key="patient_3d").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    specs, profiles = gallery_figures(app), area_profiles(app)
    assert len(specs) == 1 and len(profiles) == 1   # the 3D view and ONE area profile
    volume_spec, profile_spec = specs[0], profiles[0]
    numbers = [r.number for r in samples[patient]]
    assert volume_spec["layout"]["meta"]["current"] == numbers.index(number)
    assert any(t["type"] == "mesh3d" for t in volume_spec["data"])
    table = app.dataframe[0].value   # the per-slice summary (no upload: the only table)
    assert list(table["slice"]) == numbers
    assert volume_spec["layout"]["meta"]["predicted_voxels"] == int(table["predicted_px"].sum())
    assert volume_spec["layout"]["meta"]["true_voxels"] == sum(r.tumour_pixels for r in samples[patient])
    assert list(profile_spec[profile_spec.series == "predicted area"].pixels) == list(table["predicted_px"])
    assert set(profile_spec.series) == {"true area", "predicted area"}
    assert {"Patient summary (CSV)", "Patient report (HTML)"} <= set(download_labels(app))
    assert any(m.value.startswith(f"**{patient}**: tumour predicted on") for m in app.markdown)


@pytest.mark.parametrize("name", ["xray_chest_frontal_2111x1509.jpg", "mri_tumour_glioma_axial_224.jpg"])
def test_a_foreign_upload_shows_the_caution_above_its_four_panels(app: AppTest, foreign: Path, name: str) -> None:
    assert not app.warning   # the gallery's tumour slice passes the check
    app.switch_page(UPLOAD).run()
    path = foreign / name
    app.file_uploader(key="uploads").set_value([(name, path.read_bytes(), "image/jpeg")]).run()
    assert not app.exception and not app.error
    assert len(app.warning) == 1
    caution = app.warning[0].value
    assert "unreliable" in caution
    check = cache.predictor().predict(read_slice(path)).check
    assert check.flagged and all(reason in caution for reason in check.reasons)
    upload_tab = app.main
    kinds = [element.type for element in upload_tab]
    assert kinds.index("warning") < kinds.index("image")   # the caution comes before the panels
    assert [image.captions[0] for image in upload_tab.get("image")] == \
        ["MRI slice (FLAIR channel)", "True mask: none uploaded", "Predicted mask", "Overlay"]
    table = app.dataframe[0].value
    assert list(table["check"]) == [cache.check_label(check)] and table["check"][0].startswith("foreign: ")


def test_lgg_upload_passes_the_check_and_blanks_what_is_missing(app: AppTest, originals: Path) -> None:
    path = next(p for p in sorted(originals.glob("*.tif")) if not cache.is_mask_name(p.name))
    app.run().switch_page(UPLOAD).run()
    app.file_uploader(key="uploads").set_value([(path.name, path.read_bytes(), "image/tiff")]).run()
    assert not app.exception and not app.warning
    table = app.dataframe[0].value
    assert list(table["check"]) == ["ok"] and table["Dice"].isna().all()
    assert app.dataframe[0].proto.placeholder == ""   # missing values show blank, not "None"


def test_patient_report_holds_the_key_slices_and_figures(samples: dict) -> None:
    patient = min(samples, key=lambda p: len(samples[p]))
    slices = cache.patient_slices(str(SAMPLES_DIR), patient)
    settings = pipeline_settings()
    masks = [p.mask(settings["seg_threshold"], settings["gate"], settings["min_area"]) for p in slices.predictions]
    summary = report.patient_summary(patient, slices.numbers, masks, slices.truths)
    current = report.key_slices(summary)[0]
    figures = [report.volume_figure(masks, slices.truths, current, slices.numbers)]
    page = cache.patient_report(summary, slices, masks, figures, settings, "flair").decode()
    assert page.startswith("<!DOCTYPE html>") and patient in page
    assert page.count("<img src=\"data:image/png;base64,") == len(report.key_slices(summary))
    assert f"{summary.volume_dice:.4f}" in page and "plotly" in page.lower()
