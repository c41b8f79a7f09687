"""The Streamlit app through ``streamlit.testing.v1.AppTest``, and its helpers on real slices and real weights.

The app runs without ``BRAINSEG_DATA``, so the gallery reads the bundled ``samples/``. Models are cached per
process (``st.cache_resource``), so only the first test pays for loading them.
"""
from __future__ import annotations

import html
import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from brainseg.app import cache
from brainseg.config import pipeline_settings
from brainseg.data import gallery
from brainseg.data.index import by_patient, index_dataset, load_split
from brainseg.evaluation.evaluate import predict_records, report
from brainseg.figures import charts
from brainseg.inference.predictor import Predictor, volume_masks
from brainseg.io.slices import read_mask, read_slice
from brainseg.paths import REPOSITORY_DIR, SAMPLES_DIR, WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT_S = 300
SLICE = "TCGA_CS_4942_19970222_11"
GALLERY, UPLOAD = "brainseg/app/pages/gallery.py", "brainseg/app/pages/upload.py"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A fresh session of the page on the bundled samples, before its first run."""
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(APP, default_timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def samples() -> dict:
    return by_patient(index_dataset(SAMPLES_DIR))


def slice_heading(at: AppTest) -> str:
    headings = [m.value for m in at.markdown if m.value.startswith("#### Slice ")]
    assert len(headings) == 1, headings
    return headings[0].split("\n")[0].removeprefix("#### ").strip()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ---- the page ----------------------------------------------------------------------------------

def test_first_view_shows_a_tumour_slice_with_four_panels_and_metrics(app: AppTest, samples: dict) -> None:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    patient = gallery.first_patient(samples)
    number = gallery.telling_slice(samples[patient])
    assert app.session_state.patient == patient
    assert slice_heading(app) == f"Slice {number} / {len(samples[patient])}"
    captions = [i.captions[0] for i in app.image]   # the slice's four panels, then the volume's three planes
    assert captions[:4] == ["MRI slice (FLAIR channel)", "True mask", "Predicted mask", "Overlay"]
    assert [c.split(" · ")[0] for c in captions[4:]] == ["Axial", "Coronal", "Sagittal"]
    values = metric_values(app)
    for label in ("Tumour probability", "Predicted area", "True area", "Dice", "IoU", "Tversky (α=0.7)",
                  "Precision", "Recall"):
        assert label in values
    assert (
        values["True area"]
        == f"{samples[patient][[r.number for r in samples[patient]].index(number)].tumour_pixels:,} px"
    )
    sidebar = " ".join(m.value for m in app.sidebar.markdown)
    assert "bundled sample patients" in sidebar
    assert f"{len(samples)} patients · {sum(len(r) for r in samples.values())} slices" in sidebar
    assert app.query_params["patient"] == patient and app.query_params["slice"] == str(number)
    assert any(c.value.startswith("Out of fold over the 80 development patients") for c in app.caption)


def test_gallery_navigation_and_sliders_recompute_the_view(app: AppTest, samples: dict) -> None:
    app.run()
    patient = app.session_state.patient
    numbers = [r.number for r in samples[patient]]
    start = app.session_state.slice
    button(app, "Next ▶").click().run()
    assert slice_heading(app) == f"Slice {start + 1} / {len(numbers)}"
    button(app, "◀ Previous").click().run()
    button(app, "◀ Previous").click().run()
    assert app.session_state.slice == start - 1
    app.select_slider(key="slice").set_value(numbers[0]).run()
    assert slice_heading(app) == f"Slice {numbers[0]} / {len(numbers)}"
    app.toggle(key="tumour_only").set_value(True).run()
    tumour = [r.number for r in samples[patient] if r.tumour]
    assert app.session_state.slice == tumour[0]
    button(app, "Next ▶").click().run()
    assert app.session_state.slice == tumour[1]
    for _ in tumour:  # on to a tumour slice the shipped pipeline finds
        if metric_values(app)["Predicted area"] != "0 px":
            break
        button(app, "Next ▶").click().run()
    area_at_default = metric_values(app)["Predicted area"]
    app.slider(key="gate").set_value(1.0).run()  # no classifier probability reaches 1.0: the mask empties
    assert metric_values(app)["Predicted area"] == "0 px" != area_at_default
    assert app.query_params["gate"] == "1"
    other = next(p for p in sorted(samples) if p != patient)
    app.selectbox(key="patient").set_value(other).run()
    assert app.session_state.slice == gallery.telling_slice(samples[other])
    assert not app.exception


def test_query_parameters_restore_a_shared_view(app: AppTest, samples: dict) -> None:
    patient = sorted(samples)[-1]
    number = samples[patient][3].number
    app.query_params.update(patient=patient, slice=str(number), threshold="0.3", gate="0.2", view="composite")
    app.run()
    assert not app.exception
    assert slice_heading(app) == f"Slice {number} / {len(samples[patient])}"
    assert app.slider(key="threshold").value == pytest.approx(0.3)
    assert app.slider(key="gate").value == pytest.approx(0.2)
    assert app.image[0].captions == ["MRI slice (3-channel composite)"]


def test_largest_3d_tumour_toggle_drops_regions_apart_from_the_main_tumour(app: AppTest, samples: dict) -> None:
    """On a real sample slice whose predicted region is not part of its patient's largest 3D tumour, the
    toggle changes the shown area to what :func:`volume_masks` keeps, and travels in the URL."""
    settings, predictor = pipeline_settings(), Predictor()
    found = []
    for patient, records in sorted(samples.items()):
        predictions = predictor.predict_many([read_slice(r.image_path) for r in records])
        args = settings["seg_threshold"], settings["gate"], int(settings["min_area"])
        plain, kept = volume_masks(predictions, *args), volume_masks(predictions, *args, largest_3d=True)
        found += [
            (patient, r.number, int(a.sum()), int(b.sum()))
            for r, a, b in zip(records, plain, kept)
            if a.sum() != b.sum()
        ]
    assert found, "the shipped pipeline predicts no region apart from a patient's largest 3D tumour on the samples"
    patient, number, plain_px, kept_px = found[0]
    app.query_params.update(patient=patient, slice=str(number), largest3d="0")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.toggle(key="largest_3d").value
    assert metric_values(app)["Predicted area"] == f"{plain_px:,} px"
    app.toggle(key="largest_3d").set_value(True).run()
    assert metric_values(app)["Predicted area"] == f"{kept_px:,} px"
    assert app.query_params["largest3d"] == "1"


def test_optional_panels_travel_in_the_url(app: AppTest) -> None:
    app.query_params.update(show="why,3d")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.toggle(key="heat_map").value and app.toggle(key="patient_3d").value and not app.toggle(key="tta").value
    assert "Why: where the classifier saw tumour (LayerCAM)" in [i.captions[0] for i in app.image]
    app.toggle(key="patient_3d").set_value(False).run()
    app.toggle(key="tta").set_value(True).run()
    assert app.query_params["show"] == "why,uncertainty"
    app.toggle(key="heat_map").set_value(False).run()
    app.toggle(key="tta").set_value(False).run()
    assert "show" not in app.query_params


def test_uncertainty_panel_comes_from_the_chosen_source(app: AppTest) -> None:
    """With an ensemble shipped, the members' disagreement is a free panel and flip TTA the other choice; with one
    segmenter only flip TTA exists. The source travels in the URL."""
    members = Predictor(check=False).members
    app.query_params.update(show="uncertainty", uncertainty="members")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    captions = [i.captions[0] for i in app.image]
    if members == 1:
        assert [r.key for r in app.sidebar.radio] == ["view"] and app.query_params["uncertainty"] == "flips"
        assert any(c.startswith("Uncertainty: share of the 4 flips") for c in captions)
        return
    assert app.sidebar.radio(key="uncertainty_from").value == "members"
    assert any(c.startswith("Uncertainty: the ensemble members' disagreement") for c in captions)
    app.sidebar.radio(key="uncertainty_from").set_value("flips").run()
    assert any(c.startswith("Uncertainty: share of the 4 flips") for c in [i.captions[0] for i in app.image])
    assert app.query_params["uncertainty"] == "flips"


def test_unknown_query_parameters_fall_back_to_the_first_view(app: AppTest, samples: dict) -> None:
    app.query_params.update(patient="TCGA_XX_0000_20000101", slice="999", threshold="7", view="x-ray", show="x,,y")
    app.run()
    assert not app.exception
    patient = gallery.first_patient(samples)
    assert app.session_state.patient == patient
    assert app.session_state.slice == gallery.telling_slice(samples[patient])
    assert app.slider(key="threshold").value == pipeline_settings()["seg_threshold"]


def test_uploading_a_kaggle_tif_with_its_mask_shows_a_prediction(app: AppTest, originals: Path) -> None:
    app.run().switch_page(UPLOAD).run()
    image, mask = originals / f"{SLICE}.tif", originals / f"{SLICE}_mask.tif"
    app.file_uploader(key="uploads").set_value(
        [(image.name, image.read_bytes(), "image/tiff"), (mask.name, mask.read_bytes(), "image/tiff")]
    ).run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table["file"]) == [image.name] and list(table["mask"]) == [mask.name]
    assert list(table["status"]) == ["ok"]
    assert len(app.image) == 4  # the upload page draws only the upload's four panels
    assert any(m.value.startswith(f"#### {image.name}") for m in app.markdown)
    truth_px = int(read_mask(mask).sum())
    assert int(table["true px"][0]) == truth_px
    assert f"{truth_px:,} px" in [m.value for m in app.metric if m.label == "True area"]


def test_a_one_sequence_upload_that_passes_the_check_says_it_is_taken_as_flair(app: AppTest, samples: dict) -> None:
    """A grey PNG of a bundled slice's FLAIR channel passes the check, and the page says how it was read; the
    three-channel slice itself gets no such note."""
    rows = samples[gallery.first_patient(samples)]
    image = read_slice(rows[gallery.telling_slice(rows)].image_path)
    notes = {}
    for name, pixels in (("flair.png", image[..., 1]), ("three.png", image)):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
        app.run().switch_page(UPLOAD).run()
        app.file_uploader(key="uploads").set_value([(name, buffer.getvalue(), "image/png")]).run()
        assert not app.exception and not app.error
        assert list(app.dataframe[0].value["check"]) == ["ok"], name
        notes[name] = [c.value for c in app.caption if c.value.startswith("One MRI sequence")]
    assert notes == {"flair.png": [cache.ONE_SEQUENCE_NOTE], "three.png": []}


def test_a_corrupt_upload_shows_an_error_and_the_rest_keeps_working(app: AppTest, originals: Path) -> None:
    app.run()
    start = app.session_state.slice
    app.switch_page(UPLOAD).run()
    good = originals / f"{SLICE}.tif"
    corrupt = good.read_bytes()[:4000]  # a real TIFF cut short
    app.file_uploader(key="uploads").set_value(
        [("broken.tif", corrupt, "image/tiff"), (good.name, good.read_bytes(), "image/tiff")]
    ).run()
    assert not app.exception
    assert len(app.error) == 1 and app.error[0].value.startswith("broken.tif:")
    table = app.dataframe[0].value
    assert list(table["status"]) == ["error", "ok"]
    assert [m.value for m in app.metric if m.label == "True area"][-1] == "—"  # upload without a mask
    app.switch_page(GALLERY).run()  # the gallery kept its slice, and the uploads survive the visit
    assert app.session_state.slice == start
    button(app, "Next ▶").click().run()
    assert app.session_state.slice == start + 1
    app.switch_page(UPLOAD).run()
    assert len(app.error) == 1 and list(app.dataframe[0].value["status"]) == ["error", "ok"]
    assert any("uploaded earlier in this session" in c.value for c in app.caption)


# ---- helpers behind the page --------------------------------------------------------------------


def test_every_bundled_patient_is_a_test_patient(samples: dict) -> None:
    test = set(load_split(WEIGHTS_DIR / "split.json")["test"])
    assert samples and set(samples) <= test
    assert all(gallery.patient_split(p, load_split(WEIGHTS_DIR / "split.json")) == "test" for p in samples)


def test_gallery_source_follows_brainseg_data(kaggle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert gallery.locate({"BRAINSEG_DATA": str(kaggle_dir)}) == gallery.GallerySource(kaggle_dir, bundled=False)
    missing = gallery.locate({"BRAINSEG_DATA": str(tmp_path / "nowhere")})
    assert missing.bundled and missing.folder == SAMPLES_DIR and "nowhere" in missing.note
    if not (REPOSITORY_DIR / "data" / "kaggle_3m").is_dir():
        assert gallery.locate({}) == gallery.GallerySource(SAMPLES_DIR, bundled=True)


def test_gallery_stepping_is_clamped_and_filtered(samples: dict) -> None:
    records = next(iter(samples.values()))
    numbers, flags = [r.number for r in records], [r.tumour for r in records]
    tumour = gallery.visible_slices(numbers, flags, tumour_only=True)
    assert tumour == [r.number for r in records if r.tumour]
    assert gallery.visible_slices(numbers, flags, tumour_only=False) == numbers
    assert gallery.step(tumour, tumour[0], -1) == tumour[0] and gallery.step(tumour, tumour[-1], 5) == tumour[-1]
    assert gallery.step(tumour, tumour[0], 1) == tumour[1]
    assert gallery.nearest(tumour, 0) == tumour[0]
    assert gallery.random_slice(tumour, tumour[0], random.Random(0)) in tumour[1:]


def test_the_next_and_previous_patients_are_predicted_in_the_background(samples: dict) -> None:
    names = sorted(samples)
    assert gallery.neighbours(names, names[0]) == [names[1]]
    assert gallery.neighbours(names, names[1]) == [names[2], names[0]]
    assert gallery.neighbours(names, names[-1]) == [names[-2]]
    folder = str(SAMPLES_DIR)
    futures = cache.prefetch(folder, gallery.neighbours(names, names[1]))
    fetched = [future.result(timeout=300) for future in futures]  # (cache hits when earlier tests showed them)
    assert [len(f.numbers) for f in fetched] == [len(samples[names[2]]), len(samples[names[0]])]
    assert all(len(f.predictions) == len(f.numbers) for f in fetched)


def test_pair_uploads_by_kaggle_naming() -> None:
    pairs, left = cache.pair_uploads(
        [("a_1.tif", b"A"), ("a_1_mask.tif", b"M"), ("b_2.png", b"B")], [("c_mask.tif", b"C")]
    )
    assert pairs == [("a_1.tif", b"A", ("a_1_mask.tif", b"M")), ("b_2.png", b"B", None)]
    assert left == ["c_mask.tif"]
    pairs, left = cache.pair_uploads([("scan.png", b"S")], [("outline.png", b"O")])
    assert pairs == [("scan.png", b"S", ("outline.png", b"O"))] and left == []


def test_analyse_upload_reports_errors_by_file_name(originals: Path) -> None:
    image = originals / f"{SLICE}.tif"
    result = cache.analyse_upload("notes.txt", b"hello", None)
    assert result.prediction is None and result.error.startswith("notes.txt:")
    mask = originals / f"{SLICE}_mask.tif"
    ok = cache.analyse_upload(image.name, image.read_bytes(), (mask.name, mask.read_bytes()))
    assert ok.error is None and ok.truth.shape == ok.image_u8.shape[:2] == ok.prediction.probability.shape
    table = cache.batch_table([result, ok], 0.5, 0.5, 0)
    assert list(table["status"]) == ["error", "ok"]
    assert cache.csv_bytes(table).decode().splitlines()[0].startswith("file,mask,status")


def test_overlay_colours_true_and_false_pixels(samples: dict) -> None:
    patient = gallery.first_patient(samples)
    record = next(r for r in samples[patient] if r.number == gallery.telling_slice(samples[patient]))
    image = read_slice(record.image_path)
    truth = read_mask(record.mask_path)
    predicted = np.roll(truth, 6, axis=1)  # shifted: true positives, false positives and false negatives
    blended = charts.overlay(image, predicted, truth)
    for name, region in (
        ("true positive", predicted & truth),
        ("false positive", predicted & ~truth),
        ("false negative", ~predicted & truth),
    ):
        assert region.any()
        y, x = np.argwhere(region)[0]
        expected = (1 - charts.OVERLAY_ALPHA) * image[y, x] + charts.OVERLAY_ALPHA * np.array(
            charts.OVERLAY_COLOURS[name]
        )
        assert np.abs(blended[y, x].astype(int) - np.round(expected)).max() <= 1
    untouched = ~(predicted | truth)
    assert np.array_equal(blended[untouched], image[untouched])
    panels = charts.four_panels(image, None, predicted, "composite")
    assert [p.title for p in panels][1] == "True mask: none uploaded"
    assert all(p.image_u8.shape == image.shape and p.image_u8.dtype == np.uint8 for p in panels)
    assert np.array_equal(charts.display_image(image, "flair")[..., 0], image[..., charts.FLAIR_CHANNEL])


def test_charts_name_their_split_and_match_the_report(samples: dict) -> None:
    patient = min(samples, key=lambda p: len(samples[p]))
    records = samples[patient]
    results = predict_records(records, Predictor(), progress=False)
    metrics = {"split": "test", **report(results, pipeline_settings())}
    dice = charts.dice_distribution(metrics)
    assert "test split, 1 patient," in dice.layout.title.text and "Per-volume Dice" in dice.layout.title.text
    assert all(
        "test split" in f.layout.title.text for f in (charts.confusion_matrix(metrics), charts.roc_figure(metrics))
    )
    assert list(dice.data[0].y) == list(metrics["pipeline"]["volume"]["per_patient"].values())
    confusion = charts.confusion_matrix(metrics)
    d = metrics["pipeline"]["detection"]
    assert [list(row) for row in confusion.data[0].z] == [[d["tn"], d["fp"]], [d["fn"], d["tp"]]]
    roc = charts.roc_figure(metrics)
    assert list(roc.data[0].x) == metrics["classifier"]["roc"]["fpr"] and "AUC" in roc.layout.title.text
    labels = [label for label, _, _ in charts.headline(metrics)]
    assert labels == ["Dice per volume", "Tversky, pooled", "Detection accuracy", "Classifier ROC AUC"]
    low, high = metrics["pipeline"]["volume"]["dice_mean_interval_95"]
    assert low <= metrics["pipeline"]["volume"]["dice_mean"] <= high
    assert f"Dice per volume {low:.2f}-{high:.2f}" in charts.headline_intervals(metrics)
    rows = metrics["areas"]["per_patient"][patient]
    areas = charts.area_across_slices([tuple(r) for r in rows], rows[2][0], "areas", "test split")
    assert list(areas.data[0].y) == [r[1] for r in rows] and list(areas.data[1].y) == [r[2] for r in rows]
    profile = charts.area_profile([tuple(r) for r in rows], rows[2][0], "areas", "test split")
    assert [v["pixels"] for v in profile["data"]["values"] if v["series"] == "true area"] == [r[1] for r in rows]
    # without a mask there is no truth to draw: no "true area" series at 0, which would read as "no tumour"
    blind = charts.area_profile([tuple(r) for r in rows], rows[2][0], "areas", "upload", has_truth=False)
    assert {v["series"] for v in blind["data"]["values"]} == {"predicted area"}
    assert [d.name for d in charts.area_across_slices(rows, rows[2][0], "a", "b", has_truth=False).data] == [
        "predicted area"]


def test_training_curves_plot_every_epoch() -> None:
    for kind in ("segmenter", "classifier"):
        history = cache.load_history(kind)
        figure = charts.training_curves(history)
        assert "train-patient" in figure.layout.title.text and "val patients" in figure.layout.title.text
        assert all(len(trace.x) == len(history["epochs"]) for trace in figure.data)
        stages = history.get("stages", [])
        assert len(figure.layout.shapes) == 2 * max(len(stages) - 1, 0)  # a line per later stage, both panels
        assert [a.text for a in figure.layout.annotations if a.text in {s["name"] for s in stages}] == [
            s["name"] for s in stages[1:] for _ in range(2)
        ]


def test_member_curves_show_each_fold_member_and_its_validated_epochs() -> None:
    members = sorted((WEIGHTS_DIR / "folds").glob("fold*.safetensors"))
    histories = cache.load_member_histories(members + [WEIGHTS_DIR / "folds" / "absent.safetensors"])
    assert list(histories) == [m.stem for m in members]  # the one without a history is left out
    figure = charts.member_curves(histories)
    assert [t.name for t in figure.data] == [name for name in histories for _ in range(2)]
    for name, history in histories.items():
        loss, dice = [t for t in figure.data if t.name == name]
        assert len(loss.x) == len(history["epochs"])
        assert list(dice.y) == [e["volume_dice"] for e in history["epochs"] if "volume_dice" in e]


def test_header_states_the_out_of_fold_estimate_with_its_intervals() -> None:
    crossval = cache.load_crossval()
    line = charts.out_of_fold_line(crossval)
    oof = crossval["out_of_fold"]
    low, high = oof["volume_dice_mean_interval_95"]
    assert f"per-volume Dice {oof['volume_dice_mean']:.3f} (95% {low:.2f}-{high:.2f})" in line
    assert f"Out of fold over the {oof['patients']} development patients" in line


HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"


def test_a_hostile_file_name_is_shown_as_text_never_as_html(app: AppTest, samples: dict) -> None:
    """A slice named like an HTML tag: wherever the page allows HTML the name is escaped, and the heading shows
    it as text."""
    rows = samples[gallery.first_patient(samples)]
    buffer = io.BytesIO()
    Image.fromarray(read_slice(rows[0].image_path)).save(buffer, format="PNG")
    app.run().switch_page(UPLOAD).run()
    app.file_uploader(key="uploads").set_value([(HOSTILE_NAME, buffer.getvalue(), "image/png")]).run()
    assert not app.exception and not app.error
    assert list(app.dataframe[0].value["file"]) == [HOSTILE_NAME]
    rendered = [*app.markdown, *app.caption]
    assert all(HOSTILE_NAME not in m.value for m in rendered if m.proto.allow_html)
    assert any(m.value == f"#### {html.escape(HOSTILE_NAME)}" for m in app.markdown)
