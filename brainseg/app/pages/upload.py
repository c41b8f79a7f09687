"""Upload page: one or many slices (with their masks), a results table, and the four panels of one of them."""
from html import escape
from pathlib import Path

import streamlit as st

from brainseg.app import cache, state, views
from brainseg.config import pipeline_settings
from brainseg.io.slices import MAX_FILES_PER_BATCH

UPLOAD_TYPES = ["tif", "tiff", "png", "jpg", "jpeg"]


def upload_page() -> None:
    settings = state.settings(pipeline_settings())
    st.markdown("Drop one or many slices. Masks are paired by the Kaggle naming (`x.tif` with `x_mask.tif`) "
                "in either box. Files stay in memory and are never written to disk.")
    was_drawn = state.uploader_was_drawn("uploads")
    left, right = st.columns([3, 2])
    uploaded = left.file_uploader("MRI slices (.tif, .tiff, .png, .jpg)", type=UPLOAD_TYPES,
                                  accept_multiple_files=True, key="uploads")
    uploaded_masks = right.file_uploader("Ground-truth masks (optional)", type=UPLOAD_TYPES,
                                         accept_multiple_files=True, key="upload_masks")
    (files, masks), kept = state.held_uploads("slices", was_drawn, uploaded, uploaded_masks)
    if not files:
        st.caption("No slices uploaded yet: try the Kaggle files of any patient folder, or a PNG export of a "
                   "FLAIR slice.")
        return
    if kept:
        st.caption(f"Showing the {len(files)} slice(s) uploaded earlier in this session; drop new files to "
                   "replace them.")
    if len(files) + len(masks) > MAX_FILES_PER_BATCH:
        st.error(f"{len(files) + len(masks)} files in one batch; at most {MAX_FILES_PER_BATCH} (slices and "
                 "masks together) are analysed at once. Remove some and try again.", icon=":material/block:")
        return
    pairs, unpaired = cache.pair_uploads(files, masks)
    results = [cache.analyse_upload(name, data, mask) for name, data, mask in pairs]
    for result in results:
        if result.error:
            st.error(result.error, icon=":material/block:")
    if unpaired:
        st.warning(f"Masks without a matching slice: {', '.join(unpaired)} (expected names like "
                   "x_mask.tif beside x.tif)")
    table = cache.batch_table(results, settings.threshold, settings.gate, settings.min_area)
    st.dataframe(table, hide_index=True, width="stretch", placeholder="", column_config={
        "tumour probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
        "check": st.column_config.TextColumn(help="Input check: ok, or what makes the file unlike the training "
                                                  "slices (select a file below for every reason)")})
    st.download_button("Results (CSV)", cache.csv_bytes(table), "brainseg_results.csv", "text/csv",
                       on_click="ignore", key="upload_csv", icon=":material/download:")
    good = [r for r in results if r.prediction is not None]
    if not good:
        return
    names = [r.name for r in good]
    if st.session_state.get("upload_shown") not in names:
        st.session_state.pop("upload_shown", None)
    shown = st.selectbox("Four-panel view of", names, key="upload_shown") if len(good) > 1 else names[0]
    result = next(r for r in good if r.name == shown)
    st.markdown(f"#### {escape(result.name)}")
    if result.mask_name:
        st.caption(f"mask: {escape(result.mask_name)}")
    views.slice_view(result.image_u8, result.truth, result.prediction, settings.mask(result.prediction), settings,
                     Path(result.name).stem, key="upload", image_key=result.key)


upload_page()
