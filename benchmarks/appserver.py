"""The app as a running server, for the browser tests and the browser benchmarks (`benchmarks/`).

``serve`` runs ``streamlit run streamlit_app.py`` headless on a free localhost port, on the bundled samples
(without ``BRAINSEG_DATA``), and stops it afterwards. The browser helpers take Playwright objects but never
import Playwright, a test-only dependency.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainseg.paths import DATA_ENV

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "streamlit_app.py"
CHROMIUM = os.environ.get("BRAINSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SERVER_START_S = 120
FIRST_VIEW_MS = 240_000     # first load: models, then every slice of the first patient, on a busy CPU
STEP_MS = 120_000           # one rerun; generous because CI machines may be busy
SLICE_HEADING = re.compile(r"Slice (\d+) \/ (\d+)")   # "\/": the pattern travels to the browser as a JS regex
IDLE = "() => !document.querySelector('[data-testid=stStatusWidget]')"   # Streamlit's "running" indicator gone


@dataclass(frozen=True)
class AppServer:
    """A running ``streamlit run``: where it answers and which process serves it."""

    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(log_path: Path, start_s: float = SERVER_START_S) -> Iterator[AppServer]:
    """The app served on localhost until the block ends; its output goes to ``log_path``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    with Path(log_path).open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_health(url, process, start_s, log_path)
            yield AppServer(url, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def wait_for_health(url: str, process: subprocess.Popen, start_s: float, log_path: Path) -> None:
    """Until ``url`` answers Streamlit's health check; raises if the server exits or ``start_s`` passes."""
    deadline = time.monotonic() + start_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not answer within {start_s} s; see {log_path}")
        time.sleep(0.5)


# ---- browser steps (Playwright objects, duck-typed) ------------------------------------------------

def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium from ``sync_playwright()``: Debian's when installed, else Playwright's own."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else None
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def shown_slice(page: Any) -> tuple[int, int]:
    """``(N, M)`` of the "Slice N / M" heading, once the page has drawn it."""
    heading = page.get_by_role("heading", name=SLICE_HEADING)
    heading.wait_for(timeout=FIRST_VIEW_MS)
    number, count = SLICE_HEADING.search(heading.inner_text()).groups()
    return int(number), int(count)


def open_page(page: Any, title: str) -> None:
    """Click the app's navigation link to the page ``title`` (e.g. "Upload slices")."""
    page.get_by_test_id("stTopNavLink").filter(has_text=title).first.click()


def wait_until_idle(page: Any, timeout_ms: int = STEP_MS) -> None:
    """Until Streamlit's "running" indicator is gone (the script run has finished)."""
    page.wait_for_function(IDLE, timeout=timeout_ms)


def wait_for_heading(page: Any, text: str, timeout_ms: int = FIRST_VIEW_MS) -> None:
    """Until the heading ``text`` is visible; raises at once, with the app's traceback, if the page shows an
    exception instead, and after ``timeout_ms``."""
    exception, wanted = page.locator("[data-testid=stException]"), page.get_by_role("heading", name=text, exact=True)
    deadline = time.monotonic() + timeout_ms / 1000
    while not wanted.is_visible():
        if exception.count():
            raise AssertionError(f"the app raised while {text!r} was awaited:\n{exception.first.text_content()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not shown within {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(250)
