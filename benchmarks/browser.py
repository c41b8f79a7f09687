"""How fast the page answers a user: headless Chromium against a real ``streamlit run``, as the README starts it.

Five measurements, each repeated on a fresh server (median and all runs printed):

1. **cold first view**: a fresh server (its health check answered, no session yet), ``goto`` its URL until the
   first patient's slice heading is shown, the script run has finished, the page's images (four panels, three
   planes) are loaded and the area profile is drawn; the server loaded the models before answering its health check
   and predicts the opening patient as it serves (the OpenVINO IR cache on disk is warm after the first run);
2. **new patient, not prefetched**: at once, choose a bundled patient that is not next to the first in the
   "Patient" box (the app predicts the neighbours of the patient shown in the background), until its heading,
   idle and the images loaded;
3. **new patient, prefetched**: after looking at that patient for 5 s, choose the next one in the box;
4. **next slice**: click "Next ▶" until the next slice's heading, idle and the images loaded;
5. **shared link, fresh tab**: the address bar's URL after step 4 opened in a new browser context (a new session
   on the now warm server), until the same slice's heading, idle and the images loaded.

Every wait is bounded (benchmarks/appserver.py). Usage, from the repository root:
``python benchmarks/browser.py [--runs 3] [--json weights/browser.json]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import appserver  # noqa: E402  (after the path: run as a script)
from brainseg.data import gallery  # noqa: E402
from brainseg.data.index import by_patient, index_dataset  # noqa: E402
from brainseg.evaluation.benchmark import machine  # noqa: E402
from brainseg.paths import SAMPLES_DIR  # noqa: E402

PANELS = 4
# all four panel images present and decoded, and the area profile drawn (a Vega-Lite or a plotly chart)
PANELS_LOADED = ("() => { const images = [...document.querySelectorAll('[data-testid=stImage] img')];"
                 " const chart = document.querySelector('[data-testid=stVegaLiteChart] canvas, "
                 "[data-testid=stVegaLiteChart] svg, .js-plotly-plot .main-svg');"
                 f" return !!chart && images.length >= {PANELS} && images.every(i => i.complete && i.naturalWidth > 0);"
                 " }")
STEPS = ("cold first view", "new patient, not prefetched", "new patient, prefetched", "next slice",
         "shared link, fresh tab")
READING_MS = 5_000   # how long the user looks at a patient before choosing its neighbour


def settled(page: Any, heading: str, started: float) -> float:
    """Seconds from ``started`` until ``heading`` is shown, the run has finished and the panels are loaded."""
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=appserver.FIRST_VIEW_MS)
    appserver.wait_until_idle(page)
    page.wait_for_function(PANELS_LOADED, timeout=appserver.STEP_MS)
    return time.perf_counter() - started


def choose_patient(page: Any, patient: str) -> None:
    """Pick ``patient`` in the "Patient" select box (its options are labelled "<patient> · <split>, ...")."""
    page.get_by_test_id("stSelectbox").filter(has_text="Patient").first.click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(patient)}\b")).click()


def one_run(browser: Any, log: Path, samples: dict) -> dict[str, float]:
    """The five measurements on a fresh server."""
    names = sorted(samples)
    first = gallery.first_patient(samples)
    far = next(p for p in names if p not in [first, *gallery.neighbours(names, first)])
    after = next(p for p in gallery.neighbours(names, far) if p != first)
    with appserver.serve(log) as server:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(appserver.STEP_MS)
        times = {}
        started = time.perf_counter()
        page.goto(server.url)
        times[STEPS[0]] = settled(page, heading(samples[first], gallery.telling_slice(samples[first])), started)
        for step, patient in ((STEPS[1], far), (STEPS[2], after)):
            if step == STEPS[2]:
                page.wait_for_timeout(READING_MS)
            started = time.perf_counter()
            choose_patient(page, patient)
            times[step] = settled(page, heading(samples[patient], gallery.telling_slice(samples[patient])), started)
        number = gallery.telling_slice(samples[after])
        started = time.perf_counter()
        page.get_by_role("button", name="Next ▶").click()
        times[STEPS[3]] = settled(page, heading(samples[after], number + 1), started)
        shared = browser.new_context(viewport={"width": 1400, "height": 1000})
        fresh_tab = shared.new_page()
        fresh_tab.set_default_timeout(appserver.STEP_MS)
        started = time.perf_counter()
        fresh_tab.goto(page.url)
        times[STEPS[4]] = settled(fresh_tab, heading(samples[after], number + 1), started)
        shared.close()
        context.close()
    return times


def heading(records: list, number: int) -> str:
    return f"Slice {number} / {len(records)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh servers, each measured once per step")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    samples = by_patient(index_dataset(SAMPLES_DIR))
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as driver:
        browser = appserver.launch_chromium(driver)
        for run in range(args.runs):
            runs.append(one_run(browser, Path(scratch) / f"server{run}.log", samples))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[-1].items()), flush=True)
        browser.close()
    medians = {step: statistics.median(r[step] for r in runs) for step in STEPS}
    print(f"\n| step (median of {len(runs)}) | seconds |\n|---|---|")
    for step in STEPS:
        print(f"| {step} | {medians[step]:.2f} |")
    if args.json:
        payload = {"what": "seconds until the page shows the slice, has finished running and has drawn the four "
                           "panels and three planes (headless Chromium, benchmarks/browser.py)",
                   "reading_pause_s": READING_MS / 1000, "median_s": medians, "runs": runs,
                   "machine": machine(), "python": platform.python_version(), "streamlit": version("streamlit"),
                   "venv_in_repository": (ROOT / ".venv").is_dir()}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
