"""Volume page: one uploaded scan (NIfTI, DICOM series, multi-page TIFF or zip), read, predicted and shown in the
same volume view as a gallery patient."""
from html import escape

import numpy as np
import streamlit as st

from brainseg.app import cache, state, views
from brainseg.check.assess import summarise
from brainseg.config import pipeline_settings
from brainseg.errors import BrainsegError
from brainseg.figures import report
from brainseg.io import volumes

HELD_SCAN = "volume_upload"   # (digest, Volume, PatientSlices) of this session's one uploaded scan


def channel_picker(files: list[tuple[str, bytes]]) -> list[str]:
    """For three single-sequence files: which is pre-contrast, FLAIR and post-contrast (default by name)."""
    if len(files) != 3 or {volumes.sniff(data) for _, data in files} & {"dicom", "zip"}:
        return []
    names = [name for name, _ in files]
    default, note = cache.channel_choice(names)
    st.caption("Three volumes: which sequence feeds which model channel (by name: flair; pre or t1; post, t1c "
               "or gd). Change it if the names mislead." + (f" {escape(note)}." if note else ""))
    return [column.selectbox(channel, names, index=names.index(default[i]), key=f"vol_channel_{i}")
            for i, (column, channel) in enumerate(zip(st.columns(3), volumes.CHANNELS))]


def held_volume(files: list[tuple[str, bytes]], masks: list[tuple[str, bytes]], order: list[str],
                settings: state.Settings) -> tuple[str, volumes.Volume, cache.PatientSlices]:
    """The session's scan, read and predicted once per upload (a new upload replaces it); it opens on the slice
    with the largest predicted tumour at the current settings.

    Args:
        files: the scan's uploaded ``(name, bytes)`` files.
        masks: the uploaded mask scan's ``(name, bytes)`` files (empty without a mask).
        order: the chosen channel order as file names (pre-contrast, FLAIR, post-contrast); empty: by name.
        settings: the pipeline settings the sliders hold now.

    Returns:
        The upload's digest, the scan as read and its slices with their predictions.
    """
    digest = cache.upload_digest(files, masks, order)
    held = st.session_state.get(HELD_SCAN)
    if held is not None and held[0] == digest:
        return held
    st.session_state.pop(HELD_SCAN, None)
    with st.spinner("Reading the scan and predicting every slice…"):
        scan = volumes.read_volume(files, masks, order or None)
        slices = cache.volume_slices(scan)
    areas = [int(mask.sum()) for mask in settings.volume_masks(slices)]
    st.session_state.vol_slice = slices.numbers[int(np.argmax(areas))]
    st.session_state.vol_tumour_only = False
    for key in ("vol_row", "vol_col"):   # the planes' crosshair starts on that slice's tumour
        st.session_state.pop(key, None)
    st.session_state[HELD_SCAN] = (digest, scan, slices)
    return digest, scan, slices


def seg_bytes(scan: volumes.Volume, masks: list[np.ndarray], pipeline: dict) -> bytes:
    """The masks as a DICOM SEG on the uploaded series, built when asked for (highdicom takes 0.5 s to import)."""
    from brainseg.io.dicom_seg import dicom_seg

    return dicom_seg(scan, masks, pipeline)


def scan_facts(scan: volumes.Volume, slices: cache.PatientSlices) -> None:
    """Name, format, grid, spacing, storage and channels of the scan, and what the input check says of it."""
    height, width = scan.images_u8[0].shape[:2]
    channels = ", ".join(f"{c} ← {escape(source)}" for c, source in zip(volumes.CHANNELS, scan.channels))
    spacing = f"slice x row x column {report.spacing_text(scan.geometry.display_spacing())} mm" if \
        scan.geometry.spacing_known else "spacing unknown (the file stores none)"
    st.markdown(f"**{escape(scan.name)}** · {scan.format} · {len(slices.numbers)} axial slices of {width}x{height} · "
                f"{spacing} · stored as {scan.geometry.orientation} "
                f"{scan.geometry.dtype}  \nchannels: {channels}" +
                "".join(f"  \n{escape(note)}" for note in scan.notes))
    if slices.sequence_warning:
        st.warning(slices.sequence_warning, icon=":material/warning:")
    check = summarise([p.check for p in slices.predictions])
    if check.flagged:
        st.warning(f"Input check: {check.sentence()}; their predictions are unreliable.", icon=":material/warning:")
    elif check.checked:
        st.caption(f"Input check: {check.sentence()}.")


def volume_page() -> None:
    settings = state.settings(pipeline_settings())
    st.markdown("Drop one scan: a NIfTI (`.nii`, `.nii.gz`), a DICOM series (its files, or a `.zip` of them), a "
                "multi-page TIFF or a `.zip` of a Kaggle patient folder; or three single-sequence volumes. The "
                "content decides the format. Files stay in memory and are never written to disk.")
    was_drawn = state.uploader_was_drawn("volume_files")
    left, right = st.columns([3, 2])
    uploaded = left.file_uploader("Scan (NIfTI, DICOM, multi-page TIFF, zip)", accept_multiple_files=True,
                                  key="volume_files")
    uploaded_masks = right.file_uploader("Mask volume (optional, same grid; non-zero = tumour)",
                                         accept_multiple_files=True, key="volume_mask_files")
    (files, masks), kept = state.held_uploads("volume", was_drawn, uploaded, uploaded_masks)
    if not files:
        st.session_state.pop(HELD_SCAN, None)   # the visitor removed the scan: it is released
        st.caption("No scan uploaded yet. A single volume is taken as FLAIR and copied to the three channels; "
                   "12/16-bit, signed and float intensities are standardised to the dataset's 8-bit look (landmarks "
                   "of the training patients), 8-bit ones used as stored.")
        return
    if kept:
        st.caption("Showing the scan uploaded earlier in this session; drop new files to replace it.")
    order = channel_picker(files)
    try:
        digest, scan, slices = held_volume(files, masks, order, settings)
    except BrainsegError as err:
        st.error(str(err), icon=":material/block:")
        return
    scan_facts(scan, slices)
    masks_now = settings.volume_masks(slices)
    buttons = st.columns([1.5, 1.5, 1.5, 1.5])
    buttons[0].download_button("Predicted mask (NIfTI)", lambda: volumes.mask_nifti(masks_now, scan.geometry),
                               f"{scan.name}_mask.nii.gz", "application/gzip", key="vol_mask_nifti",
                               on_click="ignore", width="stretch", icon=":material/download:",
                               help="uint8 0/1 in the input's own grid and affine")
    buttons[1].download_button("Probabilities (NIfTI)", lambda: volumes.probability_nifti(
                               [p.probability for p in slices.predictions], scan.geometry),
                               f"{scan.name}_probabilities.nii.gz", "application/gzip", key="vol_probability_nifti",
                               on_click="ignore", width="stretch", icon=":material/download:",
                               help="float32 0-1 in the input's grid: the segmenter's raw output, before the "
                               "threshold, gate and area rules")
    if scan.dicom_sources:
        pipeline = settings.pipeline()
        buttons[2].download_button("Predicted mask (DICOM SEG)", lambda: seg_bytes(scan, masks_now, pipeline),
                                   f"{scan.name}_seg.dcm", "application/dicom", key="vol_dicom_seg",
                                   on_click="ignore", width="stretch", icon=":material/download:",
                                   help="a binary DICOM Segmentation on the uploaded series, for PACS viewers")
    spacing = scan.geometry.display_spacing() if scan.geometry.spacing_known else None
    buttons[3].download_button("Per-slice results (CSV)",
                               lambda: report.summary_csv(slices.summary(scan.name, masks_now, spacing)),
                               f"{scan.name}_slices.csv", "text/csv", key="vol_csv", on_click="ignore",
                               width="stretch", icon=":material/download:")
    top = st.columns([4, 1.8, 1.5, 1.9], vertical_alignment="bottom")
    top[0].markdown(f"**{escape(scan.name)}**" + ("" if slices.has_truth else " · no mask uploaded"))
    views.volume_view(top, slices, masks_now, views.VolumeSource(
        scan.name, "vol_", "volume", f"{scan.name} · uploaded {scan.format}",
        f"uploaded scan · every slice · pipeline at threshold {settings.threshold:g}, gate {settings.gate:g}",
        [f"{digest}/{n}" for n in slices.numbers], spacing), settings)


volume_page()
