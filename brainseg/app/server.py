"""The server's start (``st.App``'s lifespan): it answers once the models are loaded, and predicts the gallery's
opening patient in the background meanwhile serving, so that the first visitor waits for neither; a visit during
that prediction waits for it instead of starting it again (the caches are shared)."""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def load_models() -> None:
    """The models into the page's cache (importing the page's modules on the way, after Streamlit's runtime has
    started). A failure is logged and left to the page, which tries again and shows the error to the visitor."""
    try:
        from brainseg.app import cache, views  # noqa: F401  (views: the page's imports, done before the first visit)

        cache.predictor()
    except Exception as err:  # noqa: BLE001  (anything: the server must start and let the page say what failed)
        logging.getLogger(__name__).warning("models not loaded at start (the page will say why): %s", err)


def predict_opening_patient() -> None:
    """The gallery's opening patient predicted into the page's cache."""
    from brainseg.app import cache
    from brainseg.data import gallery
    from brainseg.errors import BrainsegError

    folder = str(gallery.locate().folder)
    try:
        patients = cache.gallery_patients(folder)
    except BrainsegError:   # the page says why
        return
    if patients:   # in the foreground: a visit now waits for this run (the page defers background work)
        cache.patient_slices(folder, gallery.first_patient(patients))


@asynccontextmanager
async def warm_up(_app: Any) -> AsyncIterator[None]:
    """Load the models, then serve, with the opening patient predicted on a thread."""
    # cached functions called off a session's thread (these, the gallery's prefetch) warn that they have no
    # session to draw a spinner in; Streamlit says so itself: ignorable
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    await asyncio.get_running_loop().run_in_executor(None, load_models)   # answers once they are loaded
    threading.Thread(target=predict_opening_patient, name="brainseg-warm-up", daemon=True).start()
    yield
