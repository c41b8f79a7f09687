"""End to end: ``streamlit run`` on a free localhost port, driven by a real headless Chromium (Playwright).

No ``BRAINSEG_DATA``: the page must work from a fresh clone on the bundled samples. Every wait is bounded.
Set ``BRAINSEG_SCREENSHOTS`` to a folder to keep screenshots of the gallery and upload views.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from benchmarks.appserver import STEP_MS, AppServer, open_page, shown_slice, wait_until_idle
from brainseg.data import gallery
from brainseg.data.index import by_patient, index_dataset
from brainseg.paths import SAMPLES_DIR

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser        # skipped without a Chromium (tests/conftest.py)

SCREENSHOTS = os.environ.get("BRAINSEG_SCREENSHOTS")


@pytest.fixture(scope="module")
def samples() -> dict:
    return by_patient(index_dataset(SAMPLES_DIR))


def screenshot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name))


def test_first_load_shows_four_panels_and_metrics(server: AppServer, page, samples: dict) -> None:
    page.goto(server.url)
    patient = gallery.first_patient(samples)
    assert shown_slice(page) == (gallery.telling_slice(samples[patient]), len(samples[patient]))
    images = page.locator("[data-testid=stImage]")
    images.nth(3).wait_for()
    assert images.count() == 4
    for caption in ("MRI slice (FLAIR channel)", "True mask", "Predicted mask", "Overlay"):
        assert page.get_by_text(caption, exact=True).is_visible()
    for label in ("Tumour probability", "Predicted area", "Dice", "IoU", "Recall"):
        assert page.get_by_test_id("stMetricLabel").filter(has_text=label).first.is_visible()
    assert page.get_by_text("bundled sample patients").is_visible()
    wait_until_idle(page)
    screenshot(page, "first_view.png")


def test_next_updates_the_slice_and_the_url(server: AppServer, page) -> None:
    page.goto(server.url)
    number, count = shown_slice(page)
    wait_until_idle(page)
    page.get_by_role("button", name="Next ▶").click()
    page.get_by_role("heading", name=f"Slice {number + 1} / {count}").wait_for()
    page.wait_for_url(re.compile(rf"slice={number + 1}(&|$)"), timeout=STEP_MS)


def test_a_shared_url_opens_that_view(server: AppServer, page, samples: dict) -> None:
    patient = sorted(samples)[-1]
    number = samples[patient][2].number
    page.goto(f"{server.url}/?patient={patient}&slice={number}&threshold=0.35&gate=0.25&view=composite")
    assert shown_slice(page) == (number, len(samples[patient]))
    page.get_by_text("MRI slice (3-channel composite)", exact=True).wait_for()
    wait_until_idle(page)
    assert page.get_by_text(f"{patient} · test split").is_visible()
    sliders = page.get_by_test_id("stSliderThumbValue")
    assert [sliders.nth(i).inner_text() for i in range(2)] == ["0.35", "0.25"]


def test_upload_in_the_browser_shows_the_batch_and_the_four_panels(server: AppServer, page,
                                                                   originals: Path) -> None:
    page.goto(server.url)
    shown_slice(page)
    wait_until_idle(page)
    open_page(page, "Upload slices")
    files = [originals / name for name in ("TCGA_CS_4942_19970222_11.tif", "TCGA_CS_4942_19970222_11_mask.tif",
                                           "TCGA_CS_4942_19970222_3.tif")]
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files([str(f) for f in files])
    page.get_by_role("heading", name="TCGA_CS_4942_19970222_11.tif").wait_for()
    page.get_by_test_id("stDataFrame").wait_for()
    wait_until_idle(page)
    panel = page.get_by_test_id("stMain")
    assert panel.locator("[data-testid=stImage]").count() == 4
    assert panel.get_by_test_id("stMetricLabel").filter(has_text="Dice").first.is_visible()
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.get_by_test_id("stFileUploader").first.evaluate("element => element.scrollIntoView({block: 'start'})")
    screenshot(page, "upload_view.png")
