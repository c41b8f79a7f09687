"""Gallery page: a patient of the dataset (or the bundled samples), slice by slice, as one volume view."""
import streamlit as st

from brainseg.app import cache, state, views
from brainseg.config import pipeline_settings
from brainseg.data import gallery
from brainseg.data.index import KAGGLE_HINT, SliceRecord, load_split
from brainseg.errors import BrainsegError
from brainseg.paths import WEIGHTS_DIR


def change_patient(patients: dict[str, list[SliceRecord]]) -> None:
    """A new patient opens on its most telling slice, the planes' crosshair on that slice's tumour."""
    st.session_state.slice = gallery.telling_slice(patients[st.session_state.patient])
    for key in ("row", "col"):
        st.session_state.pop(key, None)


def patient_label(patients: dict[str, list[SliceRecord]], split: dict, patient: str) -> str:
    """The patient picker's label of one patient: its slice count, slices with tumour and split.

    Args:
        patients: the gallery's slice records, by patient.
        split: the split JSON: patients by split name (``"train"``, ``"val"``, ``"test"``).
        patient: the patient to label.

    Returns:
        ``"<patient> · <n> slices, <k> with tumour · <split>"``, the split ``"none"`` when it is in none.
    """
    records = patients[patient]
    return (f"{patient} · {len(records)} slices, {sum(r.tumour for r in records)} with tumour · "
            f"{gallery.patient_split(patient, split)}")


def gallery_page() -> None:
    """The gallery patient's view; once drawn, its neighbours are predicted in the background."""
    source, settings = gallery.locate(), state.settings(pipeline_settings())
    try:
        patients = cache.gallery_patients(str(source.folder))
    except BrainsegError:   # said above every page
        patients = {}
    if not patients:
        st.info(f"No gallery: {source.folder} holds no patients. To browse the dataset, {KAGGLE_HINT}. "
                "Uploading slices works without it.")
        return
    state.restore_patient(patients)
    split = load_split(WEIGHTS_DIR / "split.json")
    top = st.columns([4, 1.8, 1.5, 1.9], vertical_alignment="bottom")
    top[0].selectbox("Patient", sorted(patients), key="patient", on_change=change_patient, args=(patients,),
                     format_func=lambda p: patient_label(patients, split, p))
    patient, folder = st.session_state.patient, str(source.folder)
    slices = cache.patient_slices(folder, patient)
    patient_split = gallery.patient_split(patient, split)
    seen = " (seen in training: expect flattering results)" if patient_split in ("train", "val") else ""
    views.volume_view(top, slices, settings.volume_masks(slices), views.VolumeSource(
        patient, "", "gallery", f"{patient} · {patient_split} split{seen}",
        f"{patient_split} split · one patient, every slice · pipeline at threshold {settings.threshold:g}, "
        f"gate {settings.gate:g}", [cache.gallery_key(folder, patient, n) for n in slices.numbers]), settings)
    cache.predictor().defer_background()
    cache.prefetch(folder, gallery.neighbours(patients, patient))   # the next visit is then a cache hit


gallery_page()
