"""The end-to-end tests' fixtures: the app served by ``streamlit run`` and a headless Chromium driving it."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import appserver
from benchmarks.appserver import STEP_MS, AppServer

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app served by ``streamlit run`` on localhost; stopped after the module's tests."""
    with appserver.serve(tmp_path_factory.mktemp("streamlit") / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        browser = appserver.launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    yield page
    context.close()
