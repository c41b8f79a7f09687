"""The view a visitor sees, in session state and in the URL: thresholds, image, panels, patient, slice and the
planes' crosshair (row and column).

The URL always holds the view, so a copied link opens the same page, patient, slice and settings.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from brainseg.app.cache import PatientSlices
from brainseg.config import mask_settings
from brainseg.data import gallery
from brainseg.data.index import SliceRecord
from brainseg.figures import charts

# The optional panels, as named in the URL's ``show`` parameter (e.g. ``show=why,3d``), by toggle key.
PANELS_IN_URL = {"heat_map": "why", "tta": "uncertainty", "patient_3d": "3d"}
# Where the uncertainty panel comes from, as named in the URL's ``uncertainty`` parameter.
UNCERTAINTY_SOURCES = {"members": "the ensemble members' disagreement", "flips": "flip TTA (four flips)"}
# Widgets of one page whose values must outlive a visit to another page (Streamlit drops the state of widgets
# that a run does not draw).
KEPT_ACROSS_PAGES = ("patient", "slice", "row", "col", "tumour_only", "patient_3d", "vol_slice", "vol_row", "vol_col",
                     "vol_tumour_only", "vol_patient_3d", "upload_shown")


@dataclass(frozen=True)
class Settings:
    """The pipeline settings the sliders hold."""

    threshold: float
    gate: float
    min_area: int
    largest_3d: bool     # volumes keep only their largest 3D tumour

    def volume_masks(self, slices: PatientSlices) -> list[np.ndarray]:
        return slices.masks(self.threshold, self.gate, self.min_area, self.largest_3d)

    def pipeline(self) -> dict:
        """These settings under ``pipeline.json``'s names (:func:`brainseg.config.mask_settings`)."""
        return mask_settings(self.threshold, self.gate, self.min_area, self.largest_3d)

    def mask(self, prediction) -> np.ndarray:
        """One slice's pipeline mask at these settings."""
        return prediction.mask(self.threshold, self.gate, self.min_area)


def settings(defaults: dict) -> Settings:
    """The settings the sidebar's sliders hold now (the minimum region is the shipped one)."""
    return Settings(st.session_state.threshold, st.session_state.gate, int(defaults["min_area"]),
                    st.session_state.largest_3d)


def keep_page_widgets() -> None:
    """Carry other pages' widget values through this run, so that coming back finds them as they were."""
    for key in KEPT_ACROSS_PAGES:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def _float_param(name: str, default: float) -> float:
    try:
        value = float(st.query_params.get(name, default))
    except ValueError:
        return default
    return value if 0.0 <= value <= 1.0 else default


def restore_view(defaults: dict) -> None:
    """On a session's first run, take the settings from the URL (thresholds, image, panels)."""
    if "threshold" in st.session_state:
        return
    st.session_state.threshold = _float_param("threshold", defaults["seg_threshold"])
    st.session_state.gate = _float_param("gate", defaults["gate"])
    largest = st.query_params.get("largest3d")
    st.session_state.largest_3d = largest == "1" if largest in ("0", "1") else bool(defaults["largest_3d_component"])
    st.session_state.view = st.query_params.get("view") if st.query_params.get("view") in charts.VIEWS else "flair"
    shown = set(st.query_params.get("show", "").split(","))
    for key, name in PANELS_IN_URL.items():
        st.session_state[key] = name in shown
    wanted_source = st.query_params.get("uncertainty")
    st.session_state.uncertainty_from = wanted_source if wanted_source in UNCERTAINTY_SOURCES else \
        defaults.get("uncertainty", "flips")
    st.session_state.tumour_only = False


def restore_patient(patients: dict[str, list[SliceRecord]]) -> None:
    """On the gallery's first run in a session, take the patient, slice and the planes' row and column from the URL
    (else the first patient's most telling slice; the volume view checks the row and column against the slices)."""
    if "patient" in st.session_state or not patients:
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
    for key in ("row", "col"):
        if st.query_params.get(key, "").isdigit():
            st.session_state[key] = int(st.query_params[key])


def share_view() -> None:
    """Write the current view into the URL (only what changed); the page is the URL's path."""
    view = {"threshold": f"{st.session_state.threshold:g}", "gate": f"{st.session_state.gate:g}",
            "largest3d": "1" if st.session_state.largest_3d else "0", "view": st.session_state.view}
    if "patient" in st.session_state:
        view.update(patient=st.session_state.patient, slice=str(st.session_state.slice))
    view.update({key: str(st.session_state[key]) for key in ("row", "col") if key in st.session_state})
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


def reset_settings(defaults: dict) -> None:
    st.session_state.threshold, st.session_state.gate = defaults["seg_threshold"], defaults["gate"]
    st.session_state.largest_3d = bool(defaults["largest_3d_component"])


def uploader_was_drawn(key: str) -> bool:
    """Whether uploader ``key`` was on the page in the previous run (call before drawing it)."""
    return key in st.session_state


def held_uploads(name: str, was_drawn: bool, *uploaded: Sequence | None
                 ) -> tuple[list[list[tuple[str, bytes]]], bool]:
    """The files of a page's uploaders as ``(name, bytes)`` lists, kept in the session while the visitor is on
    another page (an uploader that is not drawn forgets its files). Files removed on the page itself are forgotten.

    Args:
        name: the page's name; the files are kept under ``"<name>_held"`` in the session state.
        was_drawn: whether the page's uploader was drawn in the previous run (:func:`uploader_was_drawn`).
        *uploaded: each uploader's current files (Streamlit ``UploadedFile`` objects), or ``None``.

    Returns:
        One ``(name, bytes)`` list per uploader, and whether they are the kept ones.
    """
    held_key = f"{name}_held"
    if any(uploaded):
        st.session_state[held_key] = [[(f.name, f.getvalue()) for f in group or []] for group in uploaded]
        return st.session_state[held_key], False
    if was_drawn:
        st.session_state.pop(held_key, None)
    held = st.session_state.get(held_key)
    return (held, True) if held else ([[] for _ in uploaded], False)
