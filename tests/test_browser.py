"""End to end: ``streamlit run`` on a free localhost port, driven by a real headless Chromium (Playwright).

No ``BRAINSEG_DATA``: the page must work from a fresh clone on the bundled samples. Every wait is bounded.
Set ``BRAINSEG_SCREENSHOTS`` to a folder to keep screenshots of the gallery and upload views.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from brainseg import gallery
from brainseg.data import by_patient, index_dataset

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("BRAINSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SERVER_START_S = 120
FIRST_VIEW_MS = 240_000     # first load: models, then every slice of the first patient, on a busy CPU
STEP_MS = 120_000     # one rerun; generous because CI machines may be busy
SLICE_HEADING = re.compile(r"Slice (\d+) \/ (\d+)")   # "\/": the pattern travels to the browser as a JS regex
SCREENSHOTS = os.environ.get("BRAINSEG_SCREENSHOTS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served by ``streamlit run`` on localhost; stopped after the module's tests."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BRAINSEG_DATA"}
    log = (tmp_path_factory.mktemp("streamlit") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            assert process.poll() is None, f"streamlit exited with {process.returncode}; see {log.name}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"streamlit did not answer within {SERVER_START_S} s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        executable = CHROMIUM if Path(CHROMIUM).exists() else None
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    yield page
    context.close()


@pytest.fixture(scope="module")
def samples() -> dict:
    return by_patient(index_dataset(gallery.SAMPLES_DIR))


def shown_slice(page) -> tuple[int, int]:
    """``(N, M)`` of the "Slice N / M" heading, once the page has drawn it."""
    heading = page.get_by_role("heading", name=SLICE_HEADING)
    heading.wait_for(timeout=FIRST_VIEW_MS)
    number, count = SLICE_HEADING.search(heading.inner_text()).groups()
    return int(number), int(count)


def wait_until_idle(page) -> None:
    """Until Streamlit's "running" indicator is gone (the script run has finished)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=STEP_MS)


def screenshot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name))


def test_first_load_shows_four_panels_and_metrics(server: str, page, samples: dict) -> None:
    page.goto(server)
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


def test_next_updates_the_slice_and_the_url(server: str, page) -> None:
    page.goto(server)
    number, count = shown_slice(page)
    wait_until_idle(page)
    page.get_by_role("button", name="Next ▶").click()
    page.get_by_role("heading", name=f"Slice {number + 1} / {count}").wait_for()
    page.wait_for_url(re.compile(rf"slice={number + 1}(&|$)"), timeout=STEP_MS)


def test_a_shared_url_opens_that_view(server: str, page, samples: dict) -> None:
    patient = sorted(samples)[-1]
    number = samples[patient][2].number
    page.goto(f"{server}/?patient={patient}&slice={number}&threshold=0.35&gate=0.25&view=composite")
    assert shown_slice(page) == (number, len(samples[patient]))
    page.get_by_text("MRI slice (3-channel composite)", exact=True).wait_for()
    wait_until_idle(page)
    assert page.get_by_text(f"{patient} · test split").is_visible()
    sliders = page.get_by_test_id("stSliderThumbValue")
    assert [sliders.nth(i).inner_text() for i in range(2)] == ["0.35", "0.25"]


def test_upload_in_the_browser_shows_the_batch_and_the_four_panels(server: str, page, originals: Path) -> None:
    page.goto(server)
    shown_slice(page)
    wait_until_idle(page)
    page.get_by_role("tab", name=re.compile("Upload")).click()
    files = [originals / name for name in ("TCGA_CS_4942_19970222_11.tif", "TCGA_CS_4942_19970222_11_mask.tif",
                                           "TCGA_CS_4942_19970222_3.tif")]
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files([str(f) for f in files])
    page.get_by_role("heading", name="TCGA_CS_4942_19970222_11.tif").wait_for()
    page.get_by_test_id("stDataFrame").wait_for()
    wait_until_idle(page)
    panel = page.get_by_role("tabpanel", name=re.compile("Upload"))
    assert panel.locator("[data-testid=stImage]").count() == 4
    assert panel.get_by_test_id("stMetricLabel").filter(has_text="Dice").first.is_visible()
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.get_by_test_id("stFileUploader").first.evaluate("element => element.scrollIntoView({block: 'start'})")
    screenshot(page, "upload_view.png")
