"""Test data in three tiers, chosen by what is there (README, "Tests"); pytest's header names the tier.

1. plain clone (the default): what the repository ships (``samples/``, ``weights/``), data the tests make,
   and files installed packages ship. A test that needs more is skipped, and its reason names the variable
   that enables it.
2. Kaggle download: ``BRAINSEG_TEST_DATA=/path/to/kaggle_3m`` (the folder, or the one that holds it) enables
   the tests on whole patients and on the split's test patients; Kaggle's own ``.tif`` files
   (``originals``) are taken from its ``TCGA_CS_4942_19970222`` folder.
3. this team's data: ``../shared`` beside the repository (or ``BRAINSEG_SHARED``) adds the byte-exact
   originals and ``../shared/foreign``, and restores ``kaggle_3m`` from ``../shared/lgg`` when
   ``BRAINSEG_TEST_DATA`` is unset. ``.ci/run`` sets ``BRAINSEG_REQUIRE_ALL_DATA=1``: a test skipped there for
   missing data (or a missing Chromium) fails the run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = ROOT / "samples"
SPLIT_FILE = ROOT / "weights" / "split.json"
CHROMIUM = Path("/usr/bin/chromium")     # what .ci/run installs (benchmarks/appserver.py CHROMIUM)

TEST_DATA_ENV = "BRAINSEG_TEST_DATA"
SHARED_ENV = "BRAINSEG_SHARED"
REQUIRE_ENV = "BRAINSEG_REQUIRE_ALL_DATA"

ORIGINAL_PATIENT = "TCGA_CS_4942_19970222"
ORIGINAL_NAMES = tuple(f"{ORIGINAL_PATIENT}_{n}{kind}.tif" for n in (11, 3) for kind in ("", "_mask"))
SAMPLE_STEM = SAMPLES_DIR / "TCGA_CS_5396_20010302" / "TCGA_CS_5396_20010302_16"   # 4,162 tumour pixels

ENABLE_KAGGLE = f"set {TEST_DATA_ENV}=/path/to/kaggle_3m (the Kaggle download)"
ENABLE_SHARED = f"set {SHARED_ENV}=/path/to/shared (this team's machines)"
NO_CHROMIUM = ("no Chromium for the browser tests: apt-get install chromium (what .ci/run does) "
               "or python -m playwright install chromium")
DATA_SKIP_MARKS = (TEST_DATA_ENV, SHARED_ENV, "chromium")   # a skip naming one of these is a data skip


@dataclass(frozen=True)
class Tier:
    number: int
    data: Path | None      # BRAINSEG_TEST_DATA resolved to its kaggle_3m folder
    shared: Path | None    # ../shared or BRAINSEG_SHARED
    require_all: bool      # BRAINSEG_REQUIRE_ALL_DATA=1: data skips fail the run


def _kaggle_folder(given: str) -> Path:
    path = Path(given).expanduser()
    for folder in (path, path / "kaggle_3m"):
        if folder.is_dir() and any(p.name.startswith("TCGA_") and p.is_dir() for p in folder.iterdir()):
            return folder
    raise pytest.UsageError(f"{TEST_DATA_ENV}={given}: no TCGA_* patient folders there or in its kaggle_3m/; "
                            f"point it at the kaggle_3m folder of the Kaggle download")


def _shared_folder() -> Path | None:
    given = os.environ.get(SHARED_ENV)
    if given:
        if not Path(given).is_dir():
            raise pytest.UsageError(f"{SHARED_ENV}={given} is not a folder")
        return Path(given)
    beside = ROOT.parent / "shared"    # only this team's ../shared: it holds the dataset pack
    return beside if (beside / "lgg" / "unpack.py").is_file() else None


def _find_tier() -> Tier:
    given = os.environ.get(TEST_DATA_ENV)
    data = _kaggle_folder(given) if given else None
    shared = _shared_folder()
    number = 3 if shared else 2 if data else 1
    return Tier(number, data, shared, os.environ.get(REQUIRE_ENV, "") == "1")


TIER = pytest.StashKey[Tier]()


def missing(what: str, enable: str) -> NoReturn:
    """Skip a test whose data is not here; the reason says what is missing and how to enable it."""
    pytest.skip(f"missing data: {what}; {enable}")


def chromium_available() -> bool:
    """Debian's Chromium, or a browser Playwright downloaded (``python -m playwright install chromium``)."""
    if CHROMIUM.exists():
        return True
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    return cache.is_dir() and any(cache.glob("chromium*-*"))


# ---- pytest hooks: the tier in the header, browser skips, and CI's rule on data skips -------------------

def pytest_report_header(config: pytest.Config) -> list[str]:
    tier = config.stash[TIER]
    if tier.number == 1:
        line = (f"brainseg test tier 1 (plain clone): samples/, weights/ and package-shipped files; "
                f"tier 2: {ENABLE_KAGGLE}")
    elif tier.number == 2:
        line = f"brainseg test tier 2 (Kaggle download): {TEST_DATA_ENV}={tier.data}; tier 3: {ENABLE_SHARED}"
    else:
        data = tier.data or f"restored from {tier.shared / 'lgg'}"
        line = f"brainseg test tier 3 (team data): shared {tier.shared}, kaggle_3m {data}"
    lines = [line, "browser tests: Chromium found" if chromium_available() else NO_CHROMIUM]
    if tier.require_all:
        lines.append(f"{REQUIRE_ENV}=1: a test skipped for missing data fails the run")
    return lines


class DataSkips:
    """In CI (``BRAINSEG_REQUIRE_ALL_DATA=1``): every skip whose reason names a data variable or Chromium is
    listed at the end and turns the exit status into a failure."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def _note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
            if any(mark.lower() in reason.lower() for mark in DATA_SKIP_MARKS):
                self.found.append(f"{report.nodeid}: {reason}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.found and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.found:
            terminalreporter.section(f"{REQUIRE_ENV}=1 and {len(self.found)} skipped for missing data: the run fails",
                                     red=True)
            for line in self.found:
                terminalreporter.line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TIER] = tier = _find_tier()
    if tier.require_all:
        config.pluginmanager.register(DataSkips(), "brainseg-data-skips")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") and not chromium_available():
        pytest.skip(NO_CHROMIUM)


# ---- fixtures ---------------------------------------------------------------------------------------

def _project_patients(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``folder`` itself when it holds exactly the split's 100 patients; a folder of links to them when it holds
    more (the Kaggle download has 110; the team holds 10 back)."""
    split = json.loads(SPLIT_FILE.read_text())
    wanted = set(split["train"]) | set(split["val"]) | set(split["test"])
    present = {p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("TCGA_")}
    if wanted - present:
        missing(f"{folder} lacks {len(wanted - present)} of the {len(wanted)} patients of weights/split.json "
                f"(e.g. {min(wanted - present)})", ENABLE_KAGGLE)
    if present == wanted:
        return folder
    linked = tmp_path_factory.mktemp("project_patients") / "kaggle_3m"
    linked.mkdir()
    for patient in sorted(wanted):
        (linked / patient).symlink_to(folder / patient, target_is_directory=True)
    return linked


@pytest.fixture(scope="session")
def kaggle_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kaggle_3m folder of the split's 100 patients: tier 2's ``BRAINSEG_TEST_DATA``; in tier 3 without it,
    restored once from ``../shared/lgg`` into ``$TMPDIR/brainseg-test-data`` (about a minute)."""
    tier = pytestconfig.stash[TIER]
    if tier.data is not None:
        return _project_patients(tier.data, tmp_path_factory)
    if tier.shared is not None and (tier.shared / "lgg" / "unpack.py").is_file():
        dest = Path(os.environ.get("TMPDIR", "/tmp")) / "brainseg-test-data"
        subprocess.run([sys.executable, str(tier.shared / "lgg" / "unpack.py"), str(dest)], check=True)
        return _project_patients(dest / "kaggle_3m", tmp_path_factory)
    missing("whole patients of the Kaggle LGG dataset (kaggle_3m)", ENABLE_KAGGLE)


@pytest.fixture(scope="session")
def originals(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of exactly four Kaggle .tif files (two slices of TCGA_CS_4942_19970222 and their masks):
    ``../shared/lgg/original`` (byte-exact), else copied from the ``BRAINSEG_TEST_DATA`` download."""
    tier = pytestconfig.stash[TIER]
    if tier.shared is not None and (tier.shared / "lgg" / "original").is_dir():
        return tier.shared / "lgg" / "original"
    if tier.data is not None:
        found = [tier.data / ORIGINAL_PATIENT / name for name in ORIGINAL_NAMES]
        absent = [path.name for path in found if not path.is_file()]
        if absent:
            missing(f"{', '.join(absent)} not in {tier.data / ORIGINAL_PATIENT}", ENABLE_KAGGLE)
        folder = tmp_path_factory.mktemp("original")
        for path in found:
            shutil.copyfile(path, folder / path.name)
        return folder
    missing(f"Kaggle's own .tif files of {ORIGINAL_PATIENT} (slices 11 and 3, with masks)", ENABLE_KAGGLE)


@pytest.fixture(scope="session")
def foreign(pytestconfig: pytest.Config) -> Path:
    """``../shared/foreign``: 16 public non-LGG images (SOURCES.md there); this team's machines only."""
    tier = pytestconfig.stash[TIER]
    if tier.shared is not None and (tier.shared / "foreign").is_dir():
        return tier.shared / "foreign"
    missing("the team's ../shared/foreign images", ENABLE_SHARED)


@pytest.fixture(scope="session")
def sample_slice() -> Path:
    """A real tumour slice the repository ships (samples/: Kaggle pixels, losslessly re-encoded TIFF)."""
    return SAMPLE_STEM.with_name(SAMPLE_STEM.name + ".tif")


@pytest.fixture(scope="session")
def sample_mask() -> Path:
    """The hand-drawn mask of ``sample_slice`` (4,162 tumour pixels)."""
    return SAMPLE_STEM.with_name(SAMPLE_STEM.name + "_mask.tif")
