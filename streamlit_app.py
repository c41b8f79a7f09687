"""brainseg demo: brain-tumour detection and segmentation on FLAIR MRI (``streamlit run streamlit_app.py``).

Arranges the pages (``brainseg/app/pages``): what every page shares (sidebar, header, the view in the URL) runs
here, then only the page in view. The page is the URL's path, the rest of the view its query, so a link shares both.
``streamlit run`` imports this file to start the server (``app``, an ``st.App``), which loads the models and the
gallery's opening patient as it starts (:mod:`brainseg.app.server`).
"""
import streamlit as st

PAGES = "brainseg/app/pages"


def arrange() -> None:
    """One run of a session: what every page shares, then the page in view."""
    from brainseg import memory
    from brainseg.app import cache, state, views
    from brainseg.config import pipeline_settings
    from brainseg.data import gallery
    from brainseg.errors import BrainsegError

    st.set_page_config(page_title="brainseg · LGG tumour segmentation", page_icon=":material/neurology:", layout="wide")
    page = st.navigation([
        st.Page(f"{PAGES}/gallery.py", title="Gallery", icon=":material/photo_library:", default=True),
        st.Page(f"{PAGES}/upload.py", title="Upload slices", icon=":material/upload_file:", url_path="upload"),
        st.Page(f"{PAGES}/volume.py", title="Upload a volume", icon=":material/view_in_ar:", url_path="volume"),
        st.Page(f"{PAGES}/model.py", title="Model & test metrics", icon=":material/monitoring:", url_path="model"),
    ], position="top")
    defaults = pipeline_settings()
    state.restore_view(defaults)
    state.keep_page_widgets()
    source = gallery.locate()
    try:
        patients = cache.gallery_patients(str(source.folder))
    except BrainsegError as err:
        st.error(str(err))
        patients = {}
    try:
        model = cache.predictor()
    except BrainsegError as err:   # missing or damaged weights: say which file, draw nothing that needs them
        st.error(f"The models could not be loaded: {err}")
        st.stop()
    model.defer_background()   # the gallery's prefetch pauses as the page runs, and again as it ends (drawing)
    views.sidebar(source, patients, cache.device_label(model), model.members, defaults)
    views.intro(cache.load_test_metrics())
    page.run()
    state.share_view()
    model.defer_background()
    memory.release()   # what this run freed (predictions, cached copies) goes back to the OS, not kept by malloc


if __name__ == "__main__":     # a session's run (Streamlit runs this file as __main__)
    arrange()
else:                          # `streamlit run` imports it to start the server
    from brainseg.app.server import warm_up

    app = st.App(__file__, lifespan=warm_up)
