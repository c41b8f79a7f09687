"""Resident memory of the app's server process through a normal gallery session, then more sessions.

Starts ``streamlit run streamlit_app.py`` headless on a free localhost port (no ``BRAINSEG_DATA``: the bundled
``samples/``), drives it with Playwright and headless Chromium, and reads the server's ``VmRSS`` (resident now)
and ``VmHWM`` (peak resident) from /proc/PID/status after each step:

1. server started, no session;  2. the first view of one session;  3. five clicks on "Next ▶";
4. the toggles "Why (…)" (the heat map), "Uncertainty (flip TTA)" and "Patient in 3D", one at a time;
5. an upload of the three Kaggle files of tests/test_browser.py (with the toggles still on);
6. N more sessions, each opened by its URL at another patient and slice, all at once (then kept open).

Every wait is bounded; a step that shows a Streamlit exception stops the run. Usage, from the repository root:
``python benchmarks/server_memory.py [--sessions 8] [--json OUT]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import appserver  # noqa: E402  (after the path: run as a script)
from brainseg.data.index import by_patient, index_dataset  # noqa: E402
from brainseg.memory import resident_mb  # noqa: E402
from brainseg.paths import SAMPLES_DIR  # noqa: E402

ORIGINALS = Path(os.environ.get("BRAINSEG_SHARED", ROOT.parent / "shared")) / "lgg" / "original"  # as in conftest
UPLOADS = ("TCGA_CS_4942_19970222_11.tif", "TCGA_CS_4942_19970222_11_mask.tif", "TCGA_CS_4942_19970222_3.tif")
NEXT_CLICKS = 5
# (row name, toggle label, text that appears once it is on); the heat map's label names its method, which may change
TOGGLES = [("+ toggle Why (heat map)", re.compile(r"^Why \("), re.compile(r"^Why: ")),
           ("+ toggle Uncertainty (flip TTA)", "Uncertainty", "Uncertainty: share of the 4 flips"),
           ("+ toggle Patient in 3D", "Patient in 3D", "Patient summary (CSV)")]
SETTLE_S = 1.0     # after the page is idle, before reading /proc: let the server finish sending


class Run:
    """One server and the figures read from it, step by step."""

    def __init__(self, server: appserver.AppServer) -> None:
        self.server = server
        self.started = time.monotonic()
        self.rows: list[dict[str, Any]] = []

    def record(self, step: str, pages: Sequence[Any] = ()) -> None:
        """Wait until every page is idle and shows no exception, then read the server's memory."""
        for page in pages:
            appserver.wait_until_idle(page)
            if page.locator("[data-testid=stException]").count():
                raise RuntimeError(f"{step}: the page shows an exception: "
                                   f"{page.locator('[data-testid=stException]').first.inner_text()[:500]}")
        time.sleep(SETTLE_S)
        memory = resident_mb(self.server.pid)
        row = {"step": step, "VmRSS_MB": round(memory["VmRSS"], 1), "VmHWM_MB": round(memory["VmHWM"], 1),
               "seconds": round(time.monotonic() - self.started, 1)}
        self.rows.append(row)
        print(f"{step:<44} {row['VmRSS_MB']:>8.0f} {row['VmHWM_MB']:>8.0f} {row['seconds']:>7.0f}", flush=True)


def new_page(browser: Any) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(appserver.STEP_MS)
    return page


def gallery_session(run: Run, page: Any) -> None:
    """First view, steps with "Next ▶", the explanation toggles, one by one."""
    page.goto(run.server.url)
    number, count = appserver.shown_slice(page)
    run.record("first view (one session)", [page])
    for _ in range(NEXT_CLICKS):
        page.get_by_role("button", name="Next ▶").click()
        number += 1
        page.get_by_role("heading", name=f"Slice {number} / {count}").wait_for()
        appserver.wait_until_idle(page)
    run.record(f"{NEXT_CLICKS} clicks on Next", [page])
    for step, label, shown in TOGGLES:
        page.get_by_test_id("stCheckbox").filter(has=page.get_by_text(label, exact=True)).click()
        page.get_by_text(shown).first.wait_for()
        run.record(step, [page])


def upload(run: Run, page: Any, originals: Path) -> None:
    """The three Kaggle files into the upload page of the same session."""
    appserver.open_page(page, "Upload slices")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
        [str(originals / name) for name in UPLOADS])
    page.get_by_role("heading", name=UPLOADS[0]).wait_for()
    page.get_by_test_id("stMain").get_by_test_id("stDataFrame").wait_for()
    run.record(f"upload of {len(UPLOADS)} files", [page])


def more_sessions(run: Run, browser: Any, count: int) -> None:
    """``count`` sessions at other sample patients and slices, opened at once (they load together); left open."""
    patients = by_patient(index_dataset(SAMPLES_DIR))
    names = sorted(patients)
    views = []
    for i in range(count):
        patient = names[(1 + i) % len(names)]
        number = patients[patient][(1 + i) % len(patients[patient])].number
        page = new_page(browser)
        page.goto(f"{run.server.url}/?patient={patient}&slice={number}")
        views.append((page, f"Slice {number} / {len(patients[patient])}"))
    for page, heading in views:
        appserver.wait_for_heading(page, heading)
        appserver.wait_until_idle(page, appserver.FIRST_VIEW_MS)
    run.record(f"+ {count} more sessions (all open)", [page for page, _ in views])


def measure(sessions: int, originals: Path) -> list[dict[str, Any]]:
    """Every step against one fresh server; the rows of the table."""
    from playwright.sync_api import sync_playwright  # test-only dependency: imported where it is needed

    with tempfile.TemporaryDirectory() as tmp, appserver.serve(Path(tmp) / "server.log") as server:
        run = Run(server)
        time.sleep(SETTLE_S)
        run.record("server started, no session")
        with sync_playwright() as playwright:
            browser = appserver.launch_chromium(playwright)
            try:
                page = new_page(browser)
                gallery_session(run, page)
                upload(run, page, originals)
                if sessions:
                    more_sessions(run, browser, sessions)
            finally:
                browser.close()
    return run.rows


def provenance() -> dict[str, Any]:
    """What was measured: the commit, uncommitted changes beside it, and the versions that matter."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain").splitlines(),
            "python": platform.python_version(), **{name: version(name) for name in ("torch", "streamlit")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=8, help="more sessions opened after the first (default 8)")
    parser.add_argument("--originals", type=Path, default=ORIGINALS, help="folder of the Kaggle files to upload")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    print(f"{'step':<44} {'VmRSS MB':>8} {'VmHWM MB':>8} {'time s':>7}", flush=True)
    rows = measure(args.sessions, args.originals)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "sessions": args.sessions, **provenance()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
