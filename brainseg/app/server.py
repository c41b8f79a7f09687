"""The server's start (``st.App``'s lifespan): the models load and the gallery's opening patient is predicted in the
background as the server starts, so the first visitor does not wait for them; a visit meanwhile waits for that work
instead of starting it again (the caches are shared)."""
from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def warm() -> None:
    """Load the models and predict the gallery's opening patient into the page's caches (importing the page's
    modules on the way, after Streamlit's runtime has started)."""
    from brainseg.app import cache, views  # noqa: F401  (views: the page's imports, done before the first visit)
    from brainseg.data import gallery
    from brainseg.errors import BrainsegError

    cache.predictor()
    folder = str(gallery.locate().folder)
    try:
        patients = cache.gallery_patients(folder)
    except BrainsegError:   # the page says why
        return
    if patients:   # in the foreground: a visit now waits for this run (the page defers background work)
        cache.patient_slices(folder, gallery.first_patient(patients))


@asynccontextmanager
async def warm_up(_app: Any) -> AsyncIterator[None]:
    """Start :func:`warm` on a thread and serve at once."""
    # cached functions called off a session's thread (this one, the gallery's prefetch) warn that they have no
    # session to draw a spinner in; Streamlit says so itself: ignorable
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    threading.Thread(target=warm, name="brainseg-warm-up", daemon=True).start()
    yield
