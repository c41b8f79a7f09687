"""brainseg demo: brain-tumour detection and segmentation on FLAIR MRI slices (``streamlit run streamlit_app.py``).

Widgets and layout only: models, caches, uploads and explanations live in ``brainseg.service``, the gallery's
data in ``brainseg.gallery``, pictures and charts in ``brainseg.viz`` and ``brainseg.volume``. The view (patient, slice, thresholds, image
view) is kept in the URL, so a copied link opens the same view.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from brainseg import gallery, memory, service, viz, volume, volume_io
from brainseg.data import KAGGLE_HINT, SliceRecord, load_split
from brainseg.errors import BrainsegError
from brainseg.inference import Prediction, pipeline_settings
from brainseg.io import MAX_FILES_PER_BATCH, encode_png
from brainseg.weights import WEIGHTS_DIR

PAPER = "Deng, Cui & Liu (2024), *Head Tumor Segmentation and Detection Based on ResUNet*"
KAGGLE_URL = "https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation"
UPLOAD_TYPES = ["tif", "tiff", "png", "jpg", "jpeg"]


@dataclass(frozen=True)
class Settings:
    """The pipeline settings the sliders hold."""

    threshold: float
    gate: float
    min_area: int
    largest_3d: bool     # volumes keep only their largest 3D tumour

    def volume_masks(self, slices: service.PatientSlices) -> list[np.ndarray]:
        return slices.masks(self.threshold, self.gate, self.min_area, self.largest_3d)


# ---- the view in session state and in the URL ----------------------------------------------------

def _float_param(name: str, default: float) -> float:
    try:
        value = float(st.query_params.get(name, default))
    except ValueError:
        return default
    return value if 0.0 <= value <= 1.0 else default


# The optional panels, as named in the URL's ``show`` parameter (e.g. ``show=why,3d``), by toggle key.
PANELS_IN_URL = {"heat_map": "why", "tta": "uncertainty", "patient_3d": "3d"}
# Where the uncertainty panel comes from, as named in the URL's ``uncertainty`` parameter.
UNCERTAINTY_SOURCES = {"members": "the ensemble members' disagreement", "flips": "flip TTA (four flips)"}


def restore_view(patients: dict[str, list[SliceRecord]], defaults: dict) -> None:
    """On a session's first run, take the view from the URL (patient, slice, thresholds, image, panels)."""
    if "threshold" in st.session_state:
        return
    st.session_state.threshold = _float_param("threshold", defaults["seg_threshold"])
    st.session_state.gate = _float_param("gate", defaults["gate"])
    largest = st.query_params.get("largest3d")
    st.session_state.largest_3d = largest == "1" if largest in ("0", "1") else bool(defaults["largest_3d_component"])
    st.session_state.view = st.query_params.get("view") if st.query_params.get("view") in viz.VIEWS else "flair"
    shown = set(st.query_params.get("show", "").split(","))
    for key, name in PANELS_IN_URL.items():
        st.session_state[key] = name in shown
    wanted_source = st.query_params.get("uncertainty")
    st.session_state.uncertainty_from = wanted_source if wanted_source in UNCERTAINTY_SOURCES else \
        defaults.get("uncertainty", "flips")
    st.session_state.tumour_only = False
    if not patients:
        return
    wanted = st.query_params.get("patient")
    if wanted and wanted not in patients:
        st.toast(f"Patient {wanted} of the link is not in this gallery; showing another one.")
    patient = wanted if wanted in patients else gallery.first_patient(patients)
    numbers = [r.number for r in patients[patient]]
    slice_param = st.query_params.get("slice", "")
    st.session_state.patient = patient
    st.session_state.slice = int(slice_param) if slice_param.isdigit() and int(slice_param) in numbers \
        else gallery.telling_slice(patients[patient])


def share_view() -> None:
    """Write the current view into the URL (only what changed)."""
    view = {"threshold": f"{st.session_state.threshold:g}", "gate": f"{st.session_state.gate:g}",
            "largest3d": "1" if st.session_state.largest_3d else "0", "view": st.session_state.view}
    if "patient" in st.session_state:
        view.update(patient=st.session_state.patient, slice=str(st.session_state.slice))
    shown = ",".join(name for key, name in PANELS_IN_URL.items() if st.session_state.get(key))
    if st.session_state.get("tta"):
        view["uncertainty"] = st.session_state.uncertainty_from
    elif "uncertainty" in st.query_params:
        del st.query_params["uncertainty"]
    if shown:
        view["show"] = shown
    elif "show" in st.query_params:
        del st.query_params["show"]
    if {k: st.query_params.get(k) for k in view} != view:
        st.query_params.update(view)


# ---- sidebar -------------------------------------------------------------------------------------

def reset_settings(defaults: dict) -> None:
    st.session_state.threshold, st.session_state.gate = defaults["seg_threshold"], defaults["gate"]
    st.session_state.largest_3d = bool(defaults["largest_3d_component"])


def sidebar(source: gallery.GallerySource, patients: dict[str, list[SliceRecord]], device: str, members: int,
            defaults: dict) -> Settings:
    with st.sidebar:
        st.subheader("Pipeline")
        st.slider("Segmentation threshold", 0.05, 0.95, step=0.05, key="threshold",
                  help="A pixel is tumour when the segmenter's probability reaches this value.")
        st.slider("Classifier gate", 0.0, 1.0, step=0.05, key="gate",
                  help="A slice gets a mask only when the classifier's tumour probability reaches this value.")
        st.toggle("Largest 3D tumour only", key="largest_3d",
                  help="For a whole patient or an uploaded volume: keep only the largest connected tumour across "
                       "the stacked slices and drop the smaller regions apart from it, as the dataset author's "
                       "pipeline does. The model card has its out-of-fold effect.")
        st.button("Reset to the shipped defaults", on_click=reset_settings, args=(defaults,), width="stretch")
        st.caption(f"Shipped defaults (the model card says where each was chosen): threshold "
                   f"{defaults['seg_threshold']:g}, gate {defaults['gate']:g}, regions under {defaults['min_area']} px "
                   f"dropped, largest 3D tumour only {'on' if defaults['largest_3d_component'] else 'off'}.")
        st.radio("Image", list(viz.VIEWS), format_func=viz.VIEWS.get, key="view", horizontal=True)
        st.subheader("Explain")
        st.toggle("Why (LayerCAM heat map)", key="heat_map",
                  help="Where the classifier saw evidence for tumour: LayerCAM, a Grad-CAM variant, at the first "
                       "ResNet50 stage (its peak falls inside the true tumour on most test tumour slices; the "
                       "model card has the figures).")
        if members == 1:
            st.session_state.uncertainty_from = "flips"
        st.toggle("Uncertainty", key="tta",
                  help="A panel of where the prediction is unsure. From the ensemble members' disagreement (free: "
                       "they run anyway), or from flip TTA: the segmenter on four flips of the slice, averaged, the "
                       "panel showing where the flips disagree (about four times the segmenter's cost). The model "
                       "card says which marks the wrong pixels better.")
        if members > 1:
            st.radio("Uncertainty from", list(UNCERTAINTY_SOURCES), format_func=UNCERTAINTY_SOURCES.get,
                     key="uncertainty_from", disabled=not st.session_state.tta)
        st.divider()
        st.subheader("Gallery data")
        slices = sum(len(r) for r in patients.values())
        st.markdown(f"**{source.label}**  \n{len(patients)} patients · {slices} slices")
        if source.note:
            st.warning(source.note)
        if source.bundled:
            st.caption(f"For every patient of the dataset, {KAGGLE_HINT}.")
        st.subheader("Models")
        st.markdown(f"Running on **{device}**" + (f"  \nSegmenter: the mean of {members} cross-validation members"
                                                  if members > 1 else ""))
        st.caption("Loaded once per server and shared by every visitor.")
        st.divider()
        st.caption(":material/link: The address bar always holds this view (patient, slice, thresholds, image, extra panels): copy it to share.")
    return Settings(st.session_state.threshold, st.session_state.gate, int(defaults["min_area"]),
                    st.session_state.largest_3d)


# ---- header --------------------------------------------------------------------------------------

def intro(metrics: dict | None) -> None:
    """What this is, and the honest test figures with their split and aggregation."""
    st.html("<style>[data-testid=stMainBlockContainer]{padding-top:2.5rem}</style>")
    st.title(":material/neurology: Brain tumour detection & segmentation")
    st.markdown(
        f"A ResUNet outlines low-grade glioma on brain MRI slices and a ResNet50 classifier decides whether a "
        f"slice shows tumour at all, after {PAPER}. Trained here from scratch on the "
        f"[Kaggle LGG MRI Segmentation]({KAGGLE_URL}) data (FLAIR with pre- and post-contrast "
        f"slices of low-grade glioma patients), split by patient. **A research demo, not a medical device.**")
    if metrics is None:
        st.caption(":material/info: Test-set figures are not published yet: `weights/metrics_test.json` is "
                   "missing (`python -m brainseg evaluate --split test --out weights/metrics_test.json` writes it).")
        return
    for column, (label, value, explanation) in zip(st.columns(4), viz.headline(metrics)):
        column.metric(label, value, help=explanation, border=True)
    st.caption(f"Held-out patients only: {viz.split_label(metrics)}. {viz.headline_intervals(metrics)} "
               "Hover a figure for its aggregation.")
    crossval = service.load_crossval()
    if crossval is not None:
        st.caption(viz.out_of_fold_line(crossval))


# ---- one slice: four panels, metrics, downloads -------------------------------------------------

def slice_view(image_u8: np.ndarray, truth: np.ndarray | None, prediction: Prediction, mask: np.ndarray,
               settings: Settings, stem: str, key: str, image_key: str) -> None:
    """The input check's caution (when it fires), four panels (``mask``: the pipeline's, of this slice alone or
    of its volume) and the chosen explanations, the live metrics and the downloads of one slice; ``image_key``
    names the image in the explanation caches."""
    extra = []
    flips = st.session_state.tta and (st.session_state.uncertainty_from == "flips" or prediction.spread is None)
    if st.session_state.tta and not flips:
        extra.append(viz.Panel("Uncertainty: the ensemble members' disagreement (standard deviation of their "
                               "probabilities; black 0 = all agree, yellow 0.5 = split)",
                               viz.heat_image(prediction.spread, 0.5)))
    if flips:
        augmented = service.tta(image_key, image_u8)
        prediction = augmented.prediction()
        mask = prediction.mask(settings.threshold, settings.gate, settings.min_area)
        extra.append(viz.Panel("Uncertainty: share of the 4 flips on the minority side (black 0 = all agree, "
                               "yellow 0.5 = split)", viz.heat_image(augmented.disagreement(settings.threshold), 0.5)))
    if st.session_state.heat_map:
        heat = service.heat_map(image_key, image_u8)
        extra.insert(0, viz.Panel("Why: where the classifier saw tumour (LayerCAM)",
                                  viz.cam_overlay(viz.display_image(image_u8, st.session_state.view), heat)))
    if prediction.check is not None and prediction.check.flagged:
        st.warning(service.check_caution(prediction.check), icon=":material/warning:")
    elif prediction.check is not None and prediction.check.one_sequence:
        st.caption(service.ONE_SEQUENCE_NOTE)
    panels = viz.four_panels(image_u8, truth, mask, st.session_state.view)
    for column, panel in zip(st.columns(len(panels) + len(extra)), panels + extra):
        column.image(panel.image_u8, caption=panel.title, width="stretch")
    st.markdown(viz.legend_html(truth is not None), unsafe_allow_html=True)
    if flips:
        st.caption("Flip TTA on: the mask, metrics and downloads of this slice use the mean of the segmenter on "
                   "four flips, of this slice alone; the classifier, the input check and the patient charts use the "
                   "plain models.")
    slice_metrics(service.slice_summary(prediction, truth, mask), settings)
    left, right, _ = st.columns([1.3, 1.1, 3])
    left.download_button("Predicted mask (PNG)", encode_png(mask), f"{stem}_predicted_mask.png", "image/png",
                          key=f"{key}_mask", on_click="ignore", width="stretch", icon=":material/download:")
    right.download_button("Overlay (PNG)", encode_png(panels[3].image_u8), f"{stem}_overlay.png", "image/png",
                          key=f"{key}_overlay", on_click="ignore", width="stretch", icon=":material/download:")


def slice_metrics(summary: dict, settings: Settings) -> None:
    """The slice's live metrics: detection first, then overlap with the truth when there is one."""
    gated = summary["tumour_probability"] >= settings.gate
    row = st.columns(5)
    row[0].metric("Tumour probability", f"{summary['tumour_probability']:.1%}", border=True,
                  help="Classifier (ResNet50) probability that this slice shows tumour.")
    row[1].metric("Gate", "tumour" if gated else "no tumour", border=True,
                  help=f"Classifier probability against the gate ({settings.gate:g}).")
    row[2].metric("Predicted area", f"{summary['predicted_px']:,} px", f"{summary['predicted_share']:.2%} of slice",
                  delta_color="off", delta_arrow="off", border=True)
    if "dice" not in summary:
        row[3].metric("True area", "—", help="Upload the slice's mask to compare.", border=True)
        return
    row[3].metric("True area", f"{summary['true_px']:,} px", border=True)
    row[4].metric("Dice", f"{summary['dice']:.3f}", border=True,
                  help="This slice only. Both masks empty counts as 1, exactly one empty as 0.")
    row = st.columns(5)
    for column, name in zip(row, ("iou", "tversky", "precision", "recall")):
        column.metric({"iou": "IoU", "tversky": "Tversky (α=0.7)"}.get(name, name.capitalize()),
                      f"{summary[name]:.3f}", border=True)


# ---- one volume: stepper, four panels, area profile, 3D, worst slices, downloads ---------------------

@dataclass(frozen=True)
class VolumeSource:
    """Where a volume view's slices came from: a gallery patient or an uploaded scan."""

    name: str                # patient or file name, in headings and file names
    prefix: str              # of the session-state and widget keys ("" for the gallery: its keys are in the URL)
    key: str                 # of the slice's own widgets
    subtitle: str            # the grey line under the slice heading
    profile_note: str        # the area profile's subtitle
    image_keys: list[str]    # per slice: what names it in the explanation caches


def move_slice(slice_key: str, numbers: list[int], offset: int) -> None:
    st.session_state[slice_key] = gallery.step(numbers, st.session_state[slice_key], offset)


def jump_to_random(slice_key: str, numbers: list[int]) -> None:
    st.session_state[slice_key] = gallery.random_slice(numbers, st.session_state[slice_key], random.Random())


def jump_to(prefix: str, number: int, is_tumour: bool) -> None:
    st.session_state[f"{prefix}slice"] = number
    if not is_tumour:
        st.session_state[f"{prefix}tumour_only"] = False


def volume_view(top: list, slices: service.PatientSlices, masks: list[np.ndarray], source: VolumeSource,
                settings: Settings) -> None:
    """The one volume view of a gallery patient and of an uploaded scan, ``masks`` the pipeline's
    (:meth:`Settings.volume_masks`, computed once by the caller); ``top`` holds four columns, the first filled by
    the caller (the patient picker, or the scan's name)."""
    k, slice_key = source.prefix, f"{source.prefix}slice"
    top[1].toggle("Tumour slices only", key=f"{k}tumour_only", disabled=not slices.has_truth,
                  help=None if slices.has_truth else "Needs a mask volume.")
    numbers = gallery.visible_slices(slices.numbers, [bool(t.any()) for t in slices.truths],
                                     st.session_state[f"{k}tumour_only"])
    if st.session_state[slice_key] not in numbers:
        st.session_state[slice_key] = gallery.nearest(numbers, st.session_state[slice_key])
    top[2].button("Random slice", icon=":material/casino:", on_click=jump_to_random, args=(slice_key, numbers),
                  width="stretch", key=f"{k}random")
    truths = slices.truths
    if slices.has_truth:
        with top[3].popover("Worst slices by Dice", icon=":material/troubleshoot:", width="stretch"):
            st.caption("Slices with tumour in the truth or the prediction, lowest Dice first, at the current settings.")
            for number, dice in gallery.worst_slices(slices.numbers, truths, masks):
                st.button(f"Slice {number}: Dice {dice:.2f}", key=f"{k}worst_{number}", on_click=jump_to,
                          args=(k, number, bool(truths[slices.index(number)].any())), width="stretch")
    nav = st.columns([1.4, 7, 1.4], vertical_alignment="center")
    nav[0].button("◀ Previous", on_click=move_slice, args=(slice_key, numbers, -1), width="stretch",
                  disabled=st.session_state[slice_key] == numbers[0], key=f"{k}previous")
    if len(numbers) > 1:
        nav[1].select_slider("Slice", numbers, key=slice_key, label_visibility="collapsed")
    nav[2].button("Next ▶", on_click=move_slice, args=(slice_key, numbers, 1), width="stretch",
                  disabled=st.session_state[slice_key] == numbers[-1], key=f"{k}next")
    number = st.session_state[slice_key]
    st.markdown(f"#### Slice {number} / {len(slices.numbers)}  \n<span style='color:grey'>{source.subtitle}</span>",
                unsafe_allow_html=True)
    i = slices.index(number)
    slice_view(slices.images_u8[i], truths[i] if slices.has_truth else None, slices.predictions[i], masks[i],
               settings, f"{source.name}_{number}", key=source.key, image_key=source.image_keys[i])
    summary = slices.summary(source.name, masks)
    areas = viz.area_across_slices(
        list(zip(summary.slice_numbers, summary.true_px, summary.predicted_px)), number,
        f"Tumour area per slice: {'truth vs prediction' if slices.has_truth else 'prediction'}, {source.name}",
        source.profile_note)
    if not st.toggle("Patient in 3D", key=f"{k}patient_3d",
                     help="The predicted and true tumour of every slice as rotatable surfaces, the per-slice "
                          "table and a downloadable summary (CSV) and report (HTML)."):
        st.plotly_chart(areas, key=f"{k}areas")
        return
    volume_3d = volume.volume_figure(masks, truths, i, slices.numbers)
    left, right = st.columns(2)
    left.plotly_chart(volume_3d, key=f"{k}volume_3d")
    right.plotly_chart(areas, key=f"{k}areas")
    patient_downloads(summary, slices, masks, [volume_3d, areas], settings, k)


def patient_downloads(summary: volume.PatientSummary, slices: service.PatientSlices, masks: list[np.ndarray],
                      figures: list, settings: Settings, prefix: str) -> None:
    """Per-slice table of one volume, its per-volume Dice (with a mask), and the CSV and HTML downloads."""
    dice = (f" · per-volume Dice {summary.volume_dice:.3f} (all slices stacked; per slice, both masks empty counts "
            "as 1)") if summary.has_truth else " · no mask, so no Dice"
    st.markdown(f"**{summary.patient}**: tumour predicted on {len(summary.predicted_slices)} of "
                f"{len(summary.slice_numbers)} slices{dice}")
    st.dataframe(summary.rows(), hide_index=True, height=250, key=f"{prefix}patient_table")
    left, right, _ = st.columns([1.3, 1.3, 3])
    left.download_button("Patient summary (CSV)", volume.summary_csv(summary), f"{summary.patient}_summary.csv",
                         "text/csv", key=f"{prefix}patient_csv", on_click="ignore", width="stretch",
                         icon=":material/download:")
    pipeline = {"seg_threshold": settings.threshold, "gate": settings.gate, "min_area": settings.min_area,
                "largest_3d_component": settings.largest_3d}
    view = st.session_state.view
    right.download_button("Patient report (HTML)",
                          lambda: service.patient_report(summary, slices, masks, figures, pipeline, view),
                          f"{summary.patient}_report.html", "text/html", key=f"{prefix}patient_html",
                          on_click="ignore", width="stretch", icon=":material/download:")


# ---- gallery -------------------------------------------------------------------------------------

def change_patient(patients: dict[str, list[SliceRecord]]) -> None:
    st.session_state.slice = gallery.telling_slice(patients[st.session_state.patient])


def patient_label(patients: dict[str, list[SliceRecord]], split: dict, patient: str) -> str:
    records = patients[patient]
    return (f"{patient} · {len(records)} slices, {sum(r.tumour for r in records)} with tumour · "
            f"{gallery.patient_split(patient, split)}")


def gallery_tab(source: gallery.GallerySource, patients: dict[str, list[SliceRecord]], settings: Settings
                ) -> list[str]:
    """The gallery patient's view; returns the neighbouring patients, to predict once the page is drawn."""
    if not patients:
        st.info(f"No gallery: {source.folder} holds no patients. To browse the dataset, {KAGGLE_HINT}. "
                "Uploading slices works without it.")
        return []
    split = load_split(WEIGHTS_DIR / "split.json")
    top = st.columns([4, 1.8, 1.5, 1.9], vertical_alignment="bottom")
    top[0].selectbox("Patient", sorted(patients), key="patient", on_change=change_patient, args=(patients,),
                     format_func=lambda p: patient_label(patients, split, p))
    patient, folder = st.session_state.patient, str(source.folder)
    slices = service.patient_slices(folder, patient)
    patient_split = gallery.patient_split(patient, split)
    seen = " (seen in training: expect flattering results)" if patient_split in ("train", "val") else ""
    volume_view(top, slices, settings.volume_masks(slices), VolumeSource(
        patient, "", "gallery", f"{patient} · {patient_split} split{seen}",
        f"{patient_split} split · one patient, every slice · pipeline at threshold {settings.threshold:g}, "
        f"gate {settings.gate:g}", [service.gallery_key(folder, patient, n) for n in slices.numbers]), settings)
    return gallery.neighbours(patients, patient)


# ---- upload --------------------------------------------------------------------------------------

def upload_tab(settings: Settings) -> None:
    st.markdown("Drop one or many slices. Masks are paired by the Kaggle naming (`x.tif` with `x_mask.tif`) "
                "in either box. Files stay in memory and are never written to disk.")
    left, right = st.columns([3, 2])
    files = left.file_uploader("MRI slices (.tif, .tiff, .png, .jpg)", type=UPLOAD_TYPES,
                               accept_multiple_files=True, key="uploads")
    masks = right.file_uploader("Ground-truth masks (optional)", type=UPLOAD_TYPES,
                                accept_multiple_files=True, key="upload_masks")
    if not files:
        st.caption("No slices uploaded yet: try the Kaggle files of any patient folder, or a PNG export of a "
                   "FLAIR slice.")
        return
    if len(files) + len(masks or []) > MAX_FILES_PER_BATCH:
        st.error(f"{len(files) + len(masks or [])} files in one batch; at most {MAX_FILES_PER_BATCH} (slices and "
                 "masks together) are analysed at once. Remove some and try again.", icon=":material/block:")
        return
    pairs, unpaired = service.pair_uploads([(f.name, f.getvalue()) for f in files],
                                           [(f.name, f.getvalue()) for f in masks or []])
    results = [service.analyse_upload(name, data, mask) for name, data, mask in pairs]
    for result in results:
        if result.error:
            st.error(result.error, icon=":material/block:")
    if unpaired:
        st.warning(f"Masks without a matching slice: {', '.join(unpaired)} (expected names like x_mask.tif "
                   "beside x.tif)")
    table = service.batch_table(results, settings.threshold, settings.gate, settings.min_area)
    st.dataframe(table, hide_index=True, width="stretch", placeholder="", column_config={
        "tumour probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
        "check": st.column_config.TextColumn(help="Input check: ok, or what makes the file unlike the training "
                                                  "slices (select a file below for every reason)")})
    st.download_button("Results (CSV)", service.csv_bytes(table), "brainseg_results.csv", "text/csv",
                       on_click="ignore", key="upload_csv", icon=":material/download:")
    good = [r for r in results if r.prediction is not None]
    if not good:
        return
    shown = st.selectbox("Four-panel view of", [r.name for r in good], key="upload_shown") if len(good) > 1 \
        else good[0].name
    result = next(r for r in good if r.name == shown)
    st.markdown(f"#### {result.name}" + (f"  \n<span style='color:grey'>mask: {result.mask_name}</span>"
                                          if result.mask_name else ""), unsafe_allow_html=True)
    slice_view(result.image_u8, result.truth, result.prediction,
               result.prediction.mask(settings.threshold, settings.gate, settings.min_area), settings,
               Path(result.name).stem, key="upload", image_key=result.key)


# ---- volume upload -------------------------------------------------------------------------------

VOLUME_STATE = "volume_upload"   # (digest, Volume, PatientSlices) of this session's one uploaded scan


def channel_picker(files: list[tuple[str, bytes]]) -> list[str]:
    """For three single-sequence files: which is pre-contrast, FLAIR and post-contrast (default by name)."""
    if len(files) != 3 or {volume_io.sniff(data) for _, data in files} & {"dicom", "zip"}:
        return []
    names = [name for name, _ in files]
    default, note = service.channel_choice(names)
    st.caption("Three volumes: which sequence feeds which model channel (by name: flair; pre or t1; post, t1c "
               "or gd). Change it if the names mislead." + (f" {note}." if note else ""))
    return [column.selectbox(channel, names, index=names.index(default[i]), key=f"vol_channel_{i}")
            for i, (column, channel) in enumerate(zip(st.columns(3), volume_io.CHANNELS))]


def held_volume(files: list[tuple[str, bytes]], masks: list[tuple[str, bytes]],
                order: list[str]) -> tuple[str, volume_io.Volume, service.PatientSlices]:
    """The session's scan, read and predicted once per upload (a new upload replaces it)."""
    digest = service.upload_digest(files, masks, order)
    held = st.session_state.get(VOLUME_STATE)
    if held is not None and held[0] == digest:
        return held
    st.session_state.pop(VOLUME_STATE, None)
    with st.spinner("Reading the scan and predicting every slice…"):
        scan = volume_io.read_volume(files, masks, order or None)
        slices = service.volume_slices(scan)
    areas = [int(p.mask().sum()) for p in slices.predictions]
    st.session_state.vol_slice = slices.numbers[int(np.argmax(areas))]
    st.session_state.vol_tumour_only = False
    st.session_state[VOLUME_STATE] = (digest, scan, slices)
    return digest, scan, slices


def volume_tab(settings: Settings) -> None:
    st.markdown("Drop one scan: a NIfTI (`.nii`, `.nii.gz`), a DICOM series (its files, or a `.zip` of them), a "
                "multi-page TIFF or a `.zip` of a Kaggle patient folder; or three single-sequence volumes. The "
                "content decides the format. Files stay in memory and are never written to disk.")
    left, right = st.columns([3, 2])
    uploaded = left.file_uploader("Scan (NIfTI, DICOM, multi-page TIFF, zip)", accept_multiple_files=True,
                                  key="volume_files")
    uploaded_masks = right.file_uploader("Mask volume (optional, same grid; non-zero = tumour)",
                                         accept_multiple_files=True, key="volume_mask_files")
    if not uploaded:
        st.session_state.pop(VOLUME_STATE, None)   # the session moved on: the scan is released
        st.caption("No scan uploaded yet. A single volume is taken as FLAIR and copied to the three channels; "
                   "16-bit and float intensities are mapped to 0-255 by the 0.5-99.5th percentiles over the head.")
        return
    files = [(f.name, f.getvalue()) for f in uploaded]
    masks = [(f.name, f.getvalue()) for f in uploaded_masks or []]
    order = channel_picker(files)
    try:
        digest, scan, slices = held_volume(files, masks, order)
    except BrainsegError as err:
        st.error(str(err), icon=":material/block:")
        return
    height, width = scan.images_u8[0].shape[:2]
    channels = ", ".join(f"{c} ← {source}" for c, source in zip(volume_io.CHANNELS, scan.channels))
    spacing = " x ".join(f"{s:.2f}" for s in scan.geometry.display_spacing())
    st.markdown(f"**{scan.name}** · {scan.format} · {len(slices.numbers)} axial slices of {width}x{height} · "
                f"slice x row x column {spacing} mm · stored as {scan.geometry.orientation} "
                f"{scan.geometry.dtype}  \nchannels: {channels}" +
                "".join(f"  \n{note}" for note in scan.notes))
    if slices.sequence_warning:
        st.warning(slices.sequence_warning, icon=":material/warning:")
    check = service.check_summary(slices.predictions)
    if check.split(" ")[0] not in ("all", "0", ""):
        st.warning(f"Input check: {check}; their predictions are unreliable.", icon=":material/warning:")
    elif check:
        st.caption(f"Input check: {check}.")
    masks_now = settings.volume_masks(slices)
    buttons = st.columns([1.5, 1.5, 3])
    buttons[0].download_button("Predicted mask (NIfTI)", lambda: volume_io.mask_nifti(masks_now, scan.geometry),
                               f"{scan.name}_mask.nii.gz", "application/gzip", key="vol_mask_nifti",
                               on_click="ignore", width="stretch", icon=":material/download:",
                               help="uint8 0/1 in the input's own grid and affine")
    buttons[1].download_button("Per-slice results (CSV)", volume.summary_csv(slices.summary(scan.name, masks_now)),
                               f"{scan.name}_slices.csv", "text/csv", key="vol_csv", on_click="ignore",
                               width="stretch", icon=":material/download:")
    top = st.columns([4, 1.8, 1.5, 1.9], vertical_alignment="bottom")
    top[0].markdown(f"**{scan.name}**" + ("" if slices.has_truth else " · no mask uploaded"))
    volume_view(top, slices, masks_now, VolumeSource(
        scan.name, "vol_", "volume", f"{scan.name} · uploaded {scan.format}",
        f"uploaded scan · every slice · pipeline at threshold {settings.threshold:g}, gate {settings.gate:g}",
        [f"{digest}/{n}" for n in slices.numbers]), settings)


# ---- model card and test metrics -----------------------------------------------------------------

def model_tab(metrics: dict | None, members: list[Path]) -> None:
    st.subheader("Test metrics")
    if metrics is None:
        st.info("`weights/metrics_test.json` is missing: the test-split charts appear once it is computed.")
    else:
        columns = st.columns(3)
        for column, figure, key in zip(columns, (viz.dice_distribution(metrics), viz.confusion_matrix(metrics),
                                                 viz.roc_figure(metrics)), ("dice", "confusion", "roc")):
            column.plotly_chart(figure, key=key)
    st.subheader("Training")
    columns = st.columns(2)
    for column, kind in zip(columns, ("segmenter", "classifier")):
        histories = service.load_member_histories(members) if kind == "segmenter" and len(members) > 1 else {}
        history = service.load_history(kind)
        if histories:
            column.plotly_chart(viz.member_curves(histories), key="history_members")
        elif history is None:
            column.info(f"`weights/history_{kind}.json` is missing.")
        else:
            column.plotly_chart(viz.training_curves(history), key=f"history_{kind}")


# ---- page ----------------------------------------------------------------------------------------

def main() -> None:
    st.set_page_config(page_title="brainseg · LGG tumour segmentation", page_icon=":material/neurology:", layout="wide")
    defaults = pipeline_settings()
    source = gallery.locate()
    try:
        patients = service.gallery_patients(str(source.folder))
    except BrainsegError as err:
        st.error(str(err))
        patients = {}
    restore_view(patients, defaults)
    model = service.predictor()
    model.defer_background()   # the gallery's prefetch pauses as the page runs, and again as it ends (drawing)
    settings = sidebar(source, patients, service.device_label(model), model.members, defaults)
    metrics = service.load_test_metrics()
    intro(metrics)
    tabs = st.tabs([":material/photo_library: Gallery", ":material/upload_file: Upload",
                    ":material/view_in_ar: Volume upload", ":material/monitoring: Model & test metrics"])
    with tabs[0]:
        neighbours = gallery_tab(source, patients, settings)
    with tabs[1]:
        upload_tab(settings)
    with tabs[2]:
        volume_tab(settings)
    with tabs[3]:
        model_tab(metrics, model.segmenter_files)
    share_view()
    model.defer_background()
    service.prefetch(str(source.folder), neighbours)   # after the whole page: the next visit is then a cache hit
    memory.release()   # what this run freed (predictions, cached copies) goes back to the OS, not kept by malloc


main()
