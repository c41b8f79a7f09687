"""What the pages are made of: the sidebar, the header, one slice's four panels and metrics, and the one
volume view that a gallery patient and an uploaded scan share."""
from __future__ import annotations

import random
from dataclasses import dataclass
from html import escape

import numpy as np
import streamlit as st

from brainseg import measure
from brainseg.app import cache, state
from brainseg.app.state import UNCERTAINTY_SOURCES, Settings, reset_settings
from brainseg.data import gallery
from brainseg.data.index import KAGGLE_HINT, SliceRecord
from brainseg.figures import charts, planes, report
from brainseg.inference.predictor import Prediction
from brainseg.io.slices import encode_png

PAPER = "Deng, Cui & Liu (2024), *Head Tumor Segmentation and Detection Based on ResUNet*"
KAGGLE_URL = "https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation"


# ---- sidebar -------------------------------------------------------------------------------------

def sidebar(source: gallery.GallerySource, patients: dict[str, list[SliceRecord]], device: str, members: int,
            defaults: dict) -> Settings:
    """The pipeline's sliders, the explanation toggles, what the gallery reads and where the models run.

    Args:
        source: where the gallery's patients come from (its label, note and whether it is the bundled samples).
        patients: the gallery's slice records, by patient.
        device: where and how the models run, e.g. ``"CPU, OpenVINO bf16"`` (:func:`cache.device_label`).
        members: how many segmenters are averaged (1: a single model, and no choice of uncertainty source).
        defaults: the shipped pipeline settings (``seg_threshold``, ``gate``, ``min_area``,
            ``largest_3d_component``).

    Returns:
        The settings the sliders hold now.
    """
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
        st.radio("Image", list(charts.VIEWS), format_func=charts.VIEWS.get, key="view", horizontal=True)
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
        st.caption(
            ":material/link: The address bar always holds this view (page, patient, slice, thresholds, image, "
            "extra panels): copy it to share."
        )
    return state.settings(defaults)


# ---- header --------------------------------------------------------------------------------------


# Under 640 px Streamlit stacks columns; the slice's panels (containers keyed "panels_...") stay two abreast instead.
PAGE_CSS = ("<style>[data-testid=stMainBlockContainer]{padding-top:2.5rem}"
            "@media (max-width:640px){[class*=st-key-panels_] [data-testid=stHorizontalBlock]{flex-flow:row wrap}"
            "[class*=st-key-panels_] [data-testid=stColumn]{flex:1 1 calc(50% - 1rem)!important;"
            "min-width:calc(50% - 1rem)!important;width:calc(50% - 1rem)!important}}</style>")


def intro(metrics: dict | None) -> None:
    """What this is, and the honest test figures with their split and aggregation."""
    st.html(PAGE_CSS)
    st.title(":material/neurology: Brain tumour detection & segmentation")
    st.markdown(
        f"A ResUNet outlines low-grade glioma on brain MRI slices and a ResNet50 classifier decides whether a "
        f"slice shows tumour at all, after {PAPER}. Trained here from scratch on the "
        f"[Kaggle LGG MRI Segmentation]({KAGGLE_URL}) data (FLAIR with pre- and post-contrast "
        f"slices of low-grade glioma patients), split by patient. **A research demo, not a medical device.**"
    )
    if metrics is None:
        st.caption(
            ":material/info: Test-set figures are not published yet: `weights/metrics_test.json` is "
            "missing (`python -m brainseg evaluate --split test --out weights/metrics_test.json` writes it)."
        )
        return
    for column, (label, value, explanation) in zip(st.columns(4), charts.headline(metrics)):
        column.metric(label, value, help=explanation, border=True)
    st.caption(
        f"Held-out patients only: {charts.split_label(metrics)}. {charts.headline_intervals(metrics)} "
        "Hover a figure for its aggregation."
    )
    crossval = cache.load_crossval()
    if crossval is not None:
        st.caption(charts.out_of_fold_line(crossval))


# ---- one slice: four panels, metrics, downloads -------------------------------------------------


def slice_view(
    image_u8: np.ndarray,
    truth: np.ndarray | None,
    prediction: Prediction,
    mask: np.ndarray,
    settings: Settings,
    stem: str,
    key: str,
    image_key: str,
) -> None:
    """The input check's caution (when it fires), four panels and the chosen explanations, the live metrics and
    the downloads of one slice.

    Args:
        image_u8: ``HxWx3 uint8`` slice.
        truth: ``HxW bool`` true mask, or ``None`` without one.
        prediction: the models' prediction of the slice.
        mask: ``HxW bool``: the pipeline's mask, of this slice alone or of its volume (replaced by the flips'
            mean when flip TTA is on).
        settings: the pipeline settings the sliders hold.
        stem: the start of the downloads' file names.
        key: the start of the download buttons' widget keys.
        image_key: what names the image in the explanation caches.
    """
    extra = []
    flips = st.session_state.tta and (st.session_state.uncertainty_from == "flips" or prediction.spread is None)
    if st.session_state.tta and not flips:
        extra.append(
            charts.Panel(
                "Uncertainty: the ensemble members' disagreement (standard deviation of their "
                "probabilities; black 0 = all agree, yellow 0.5 = split)",
                charts.heat_image(prediction.spread, 0.5),
            )
        )
    if flips:
        augmented = cache.tta(image_key, image_u8)
        prediction = augmented.prediction()
        mask = settings.mask(prediction)
        extra.append(
            charts.Panel(
                "Uncertainty: share of the 4 flips on the minority side (black 0 = all agree, yellow 0.5 = split)",
                charts.heat_image(augmented.disagreement(settings.threshold), 0.5),
            )
        )
    if st.session_state.heat_map:
        heat = cache.heat_map(image_key, image_u8)
        extra.insert(
            0,
            charts.Panel(
                "Why: where the classifier saw tumour (LayerCAM)",
                charts.cam_overlay(charts.display_image(image_u8, st.session_state.view), heat),
            ),
        )
    if prediction.check is not None and prediction.check.flagged:
        st.warning(cache.check_caution(prediction.check), icon=":material/warning:")
    elif prediction.check is not None and prediction.check.one_sequence:
        st.caption(cache.ONE_SEQUENCE_NOTE)
    panels = charts.four_panels(image_u8, truth, mask, st.session_state.view)
    for column, panel in zip(st.container(key=f"panels_{key}").columns(len(panels) + len(extra)), panels + extra):
        column.image(panel.image_u8, caption=panel.title, width="stretch")
    st.markdown(charts.legend_html(truth is not None), unsafe_allow_html=True)
    if flips:
        st.caption(
            "Flip TTA on: the mask, metrics and downloads of this slice use the mean of the segmenter on "
            "four flips, of this slice alone; the classifier, the input check and the patient charts use the "
            "plain models."
        )
    slice_metrics(cache.slice_summary(prediction, truth, mask), settings)
    left, right, _ = st.columns([1.3, 1.1, 3])
    left.download_button(
        "Predicted mask (PNG)",
        encode_png(mask),
        f"{stem}_predicted_mask.png",
        "image/png",
        key=f"{key}_mask",
        on_click="ignore",
        width="stretch",
        icon=":material/download:",
    )
    right.download_button(
        "Overlay (PNG)",
        encode_png(panels[3].image_u8),
        f"{stem}_overlay.png",
        "image/png",
        key=f"{key}_overlay",
        on_click="ignore",
        width="stretch",
        icon=":material/download:",
    )


def slice_metrics(summary: dict, settings: Settings) -> None:
    """The slice's live metrics: detection first, then overlap with the truth when there is one."""
    gated = summary["tumour_probability"] >= settings.gate
    row = st.columns(5)
    row[0].metric(
        "Tumour probability",
        f"{summary['tumour_probability']:.1%}",
        border=True,
        help="Classifier (ResNet50) probability that this slice shows tumour.",
    )
    row[1].metric(
        "Gate",
        "tumour" if gated else "no tumour",
        border=True,
        help=f"Classifier probability against the gate ({settings.gate:g}).",
    )
    row[2].metric(
        "Predicted area",
        f"{summary['predicted_px']:,} px",
        f"{summary['predicted_share']:.2%} of slice",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    if "dice" not in summary:
        row[3].metric("True area", "—", help="Upload the slice's mask to compare.", border=True)
        return
    row[3].metric("True area", f"{summary['true_px']:,} px", border=True)
    row[4].metric(
        "Dice",
        f"{summary['dice']:.3f}",
        border=True,
        help="This slice only. Both masks empty counts as 1, exactly one empty as 0.",
    )
    row = st.columns(5)
    for column, name in zip(row, ("iou", "tversky", "precision", "recall")):
        column.metric(
            {"iou": "IoU", "tversky": "Tversky (α=0.7)"}.get(name, name.capitalize()),
            f"{summary[name]:.3f}",
            border=True,
        )


# ---- one volume: stepper, four panels, area profile, 3D, worst slices, downloads ---------------------


@dataclass(frozen=True)
class VolumeSource:
    """Where a volume view's slices came from: a gallery patient or an uploaded scan."""

    name: str  # patient or file name, in headings and file names
    prefix: str  # of the session-state and widget keys ("" for the gallery: its keys are in the URL)
    key: str  # of the slice's own widgets
    subtitle: str  # the grey line under the slice heading
    profile_note: str  # the area profile's subtitle
    image_keys: list[str]  # per slice: what names it in the explanation caches
    spacing: tuple[float, float, float] | None = None  # mm between slices, rows, columns; None: unknown


def move_slice(slice_key: str, numbers: list[int], offset: int) -> None:
    """Step the shown slice through the visible ones (a button's callback).

    Args:
        slice_key: the session-state key of the shown slice's number.
        numbers: the visible slices' numbers, in order.
        offset: how many visible slices to move (negative: back), stopping at the ends.
    """
    st.session_state[slice_key] = gallery.step(numbers, st.session_state[slice_key], offset)


def jump_to_random(slice_key: str, numbers: list[int]) -> None:
    st.session_state[slice_key] = gallery.random_slice(numbers, st.session_state[slice_key], random.Random())


def jump_to(prefix: str, number: int, is_tumour: bool) -> None:
    """Show slice ``number`` (a button's callback); a slice without true tumour turns "tumour slices only" off.

    Args:
        prefix: the view's session-state key prefix (``""`` for the gallery).
        number: the slice number to show.
        is_tumour: whether the slice has tumour in its truth.
    """
    st.session_state[f"{prefix}slice"] = number
    if not is_tumour:
        st.session_state[f"{prefix}tumour_only"] = False


def planes_view(slices: cache.PatientSlices, masks: list[np.ndarray], source: VolumeSource, current: int) -> None:
    """Axial, coronal and sagittal planes through one crosshair: the shown slice (the stepper above) and a row and
    a column (the sliders under the coronal and sagittal planes); moving one moves the crosshair in the others.

    Args:
        slices: the volume's slices, truths and predictions, in slice order.
        masks: the pipeline's ``HxW bool`` mask per slice.
        source: where the slices came from (its key prefix names the row and column in the session and the URL,
            its spacing scales the planes).
        current: position (0-based) of the shown slice.
    """
    height, width = slices.images_u8[0].shape[:2]
    row_key, column_key = f"{source.prefix}row", f"{source.prefix}col"
    start = planes.default_crosshair(masks[current])
    for key, size, default in ((row_key, height, start[0]), (column_key, width, start[1])):
        value = st.session_state.get(key)
        if not isinstance(value, int) or not 1 <= value <= size:   # a new volume, or a link's position out of range
            st.session_state[key] = default + 1
    row, column = st.session_state[row_key], st.session_state[column_key]
    drawn = planes.three_planes(slices.images_u8, masks, slices.truths if slices.has_truth else None,
                                (current, row - 1, column - 1), source.spacing, st.session_state.view)
    scale = ("spacing unknown: drawn with one pixel a voxel, so the coronal and sagittal planes are as thin as the "
             "slice count" if source.spacing is None else
             f"drawn to scale: voxels of {report.spacing_text(source.spacing)} mm (slice x row x column)")
    st.caption(f"Crosshair at slice {slices.numbers[current]}, row {row}, column {column} · {scale} · superior up, "
               "the patient's left on the right, anterior on the left in the sagittal plane.")
    columns = st.columns(3)
    titles = (f"Axial · slice {slices.numbers[current]}", f"Coronal · row {row} of {height}",
              f"Sagittal · column {column} of {width}")
    for place, plane, title in zip(columns, drawn, titles):
        place.image(plane.image_u8, caption=title, width="stretch")
    columns[0].caption("Slice: the stepper above.")
    columns[1].slider("Coronal plane (row)", 1, height, key=row_key)
    columns[2].slider("Sagittal plane (column)", 1, width, key=column_key)


def measurement_table(summary: report.PatientSummary) -> None:
    """The predicted (and true) tumour's volume, extent, hemisphere and slice of largest area, as a small table
    (it wraps on a narrow screen, unlike metrics), and how each is measured."""
    measured = [("predicted", summary.measurements)]
    if summary.true_measurements is not None:
        measured.append(("true", summary.true_measurements))
    lines = ["| tumour | volume | extent (L-R x A-P x S-I) | hemisphere | largest area |", "|---|--:|--:|---|---|"]
    for name, found in measured:
        largest = "—" if found.largest_slice is None else f"slice {found.largest_slice} ({found.largest_px:,} px)"
        lines.append(f"| {name} | {found.volume_text()} | {found.extent_text()} | {found.hemisphere} | {largest} |")
    st.markdown("\n".join(lines))
    unknown = ("Spacing unknown, voxels: this file stores no voxel size, so sizes are counted in voxels (and its "
               "orientation is assumed: the Kaggle slices' radiological view). " if summary.measurements.spacing is None
               else "Volume: voxels times the voxel's volume, 1 mL = 1,000 mm³. ")
    st.caption(f"{unknown}Hemisphere: the side of the head's midline (the centre of the head's bounding box from "
               f"right to left) holding at least {measure.SIDE_SHARE:.0%} of the tumour's voxels; both when neither "
               "does.")


def volume_view(
    top: list, slices: cache.PatientSlices, masks: list[np.ndarray], source: VolumeSource, settings: Settings
) -> None:
    """The one volume view of a gallery patient and of an uploaded scan.

    Args:
        top: four Streamlit columns, the first filled by the caller (the patient picker, or the scan's name).
        slices: the volume's slices, truths and predictions, in slice order.
        masks: the pipeline's ``HxW bool`` mask per slice (:meth:`Settings.volume_masks`, computed once by the
            caller).
        source: where the slices came from: names, widget keys, captions and explanation-cache keys.
        settings: the pipeline settings the sliders hold.
    """
    k, slice_key = source.prefix, f"{source.prefix}slice"
    top[1].toggle(
        "Tumour slices only",
        key=f"{k}tumour_only",
        disabled=not slices.has_truth,
        help=None if slices.has_truth else "Needs a mask volume.",
    )
    numbers = gallery.visible_slices(
        slices.numbers, [bool(t.any()) for t in slices.truths], st.session_state[f"{k}tumour_only"]
    )
    if st.session_state[slice_key] not in numbers:
        st.session_state[slice_key] = gallery.nearest(numbers, st.session_state[slice_key])
    top[2].button(
        "Random slice",
        icon=":material/casino:",
        on_click=jump_to_random,
        args=(slice_key, numbers),
        width="stretch",
        key=f"{k}random",
    )
    truths = slices.truths
    if slices.has_truth:
        with top[3].popover("Worst slices by Dice", icon=":material/troubleshoot:", width="stretch"):
            st.caption("Slices with tumour in the truth or the prediction, lowest Dice first, at the current settings.")
            for number, dice in gallery.worst_slices(slices.numbers, truths, masks):
                st.button(
                    f"Slice {number}: Dice {dice:.2f}",
                    key=f"{k}worst_{number}",
                    on_click=jump_to,
                    args=(k, number, bool(truths[slices.index(number)].any())),
                    width="stretch",
                )
    nav = st.columns([1.4, 7, 1.4], vertical_alignment="center")
    nav[0].button(
        "◀ Previous",
        on_click=move_slice,
        args=(slice_key, numbers, -1),
        width="stretch",
        disabled=st.session_state[slice_key] == numbers[0],
        key=f"{k}previous",
    )
    if len(numbers) > 1:
        nav[1].select_slider("Slice", numbers, key=slice_key, label_visibility="collapsed")
    nav[2].button(
        "Next ▶",
        on_click=move_slice,
        args=(slice_key, numbers, 1),
        width="stretch",
        disabled=st.session_state[slice_key] == numbers[-1],
        key=f"{k}next",
    )
    number = st.session_state[slice_key]
    st.markdown(f"#### Slice {number} / {len(slices.numbers)}")
    st.caption(escape(source.subtitle))
    i = slices.index(number)
    slice_view(
        slices.images_u8[i],
        truths[i] if slices.has_truth else None,
        slices.predictions[i],
        masks[i],
        settings,
        f"{source.name}_{number}",
        key=source.key,
        image_key=source.image_keys[i],
    )
    summary = slices.summary(source.name, masks, source.spacing)
    st.markdown("#### The whole volume: three planes and the tumour's size")
    if summary.measurements is None:
        st.caption("The slices differ in size, so they are not drawn as a volume.")
    else:
        planes_view(slices, masks, source, i)
        measurement_table(summary)
    rows = list(zip(summary.slice_numbers, summary.true_px, summary.predicted_px))
    title = f"Tumour area per slice: {'truth vs prediction' if slices.has_truth else 'prediction'}, {source.name}"
    areas = charts.area_profile(rows, number, title, source.profile_note, slices.has_truth)
    if not st.toggle(
        "Patient in 3D",
        key=f"{k}patient_3d",
        help="The predicted and true tumour of every slice as rotatable surfaces, the per-slice "
        "table and a downloadable summary (CSV) and report (HTML).",
    ):
        st.vega_lite_chart(areas, key=f"{k}areas", width="stretch")
        return
    volume_3d = report.volume_figure(masks, truths if slices.has_truth else None, i, slices.numbers)
    left, right = st.columns(2)
    left.plotly_chart(volume_3d, key=f"{k}volume_3d")
    right.vega_lite_chart(areas, key=f"{k}areas", width="stretch")
    report_areas = charts.area_across_slices(rows, number, title, source.profile_note, slices.has_truth)
    patient_downloads(summary, slices, masks, [volume_3d, report_areas], settings, k)


def patient_downloads(
    summary: report.PatientSummary,
    slices: cache.PatientSlices,
    masks: list[np.ndarray],
    figures: list,
    settings: Settings,
    prefix: str,
) -> None:
    """Per-slice table of one volume, its per-volume Dice (with a mask), and the CSV and HTML downloads.

    Args:
        summary: the volume's per-slice summary.
        slices: the volume's slices, truths and predictions, in slice order.
        masks: the pipeline's ``HxW bool`` mask per slice.
        figures: the plotly figures the HTML report embeds (the 3D view and the area profile).
        settings: the pipeline settings the sliders hold, written into the report.
        prefix: the view's session-state and widget key prefix (``""`` for the gallery).
    """
    dice = (
        (f" · per-volume Dice {summary.volume_dice:.3f} (all slices stacked; per slice, both masks empty counts as 1)")
        if summary.has_truth
        else " · no mask, so no Dice"
    )
    st.markdown(
        f"**{summary.patient}**: tumour predicted on {len(summary.predicted_slices)} of "
        f"{len(summary.slice_numbers)} slices{dice}"
    )
    st.dataframe(summary.rows(), hide_index=True, height=250, key=f"{prefix}patient_table")
    left, right, _ = st.columns([1.3, 1.3, 3])
    left.download_button(
        "Patient summary (CSV)",
        report.summary_csv(summary),
        f"{summary.patient}_summary.csv",
        "text/csv",
        key=f"{prefix}patient_csv",
        on_click="ignore",
        width="stretch",
        icon=":material/download:",
    )
    pipeline = settings.pipeline()
    view = st.session_state.view
    right.download_button(
        "Patient report (HTML)",
        lambda: cache.patient_report(summary, slices, masks, figures, pipeline, view),
        f"{summary.patient}_report.html",
        "text/html",
        key=f"{prefix}patient_html",
        on_click="ignore",
        width="stretch",
        icon=":material/download:",
    )
