"""``brainseg predict --ray``: on a local Ray and on a Ray head this test starts on the loopback, the same CSV and
files as the plain run (slices, a NIfTI, a DICOM zip, a corrupt file); a killed worker's files are error rows; without
Ray, one line and exit code 2."""
from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from brainseg import distributed
from brainseg.cli import main
from brainseg.data.index import index_patient
from brainseg.errors import BrainsegError
from brainseg.evaluation.encodings import dicom_series, nifti, to_xyz
from brainseg.io.slices import read_slice
from brainseg.paths import SAMPLES_DIR
from brainseg.predict import CSV_NAME

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
PATIENT = SAMPLES_DIR / "TCGA_HT_7686_19950629"      # test split, 20 slices
DICOM_PATIENT = SAMPLES_DIR / "TCGA_CS_5396_20010302"  # test split, 24 slices
EXACT = ("file", "slice", "predicted_area_px", "verdict", "reasons", "mask_png", "overlay_png", "mask_nifti",
         "intensity", "error")


def _volume(patient: Path) -> np.ndarray:
    """``SxHxWx3 uint8``: the patient's slices in order."""
    return np.stack([read_slice(r.image_path) for r in index_patient(patient)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three slices, the first again from another folder (its stem gets ``_2``), a 4D NIfTI, a 12-bit DICOM zip
    and a truncated slice."""
    folder = tmp_path_factory.mktemp("inputs")
    slices = [PATIENT / f"{PATIENT.name}_{n}.tif" for n in (10, 11, 12)]
    (folder / "twin").mkdir()
    twin = Path(shutil.copyfile(slices[0], folder / "twin" / slices[0].name))
    scan = folder / "scan.nii.gz"
    scan.write_bytes(nifti(to_xyz(_volume(PATIENT))))
    series = folder / "flair.zip"
    series.write_bytes(dicom_series(_volume(DICOM_PATIENT)[..., 1].astype(np.uint16) * 16, slope=0.5, intercept=-20))
    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(slices[1].read_bytes()[:3000])
    return [*slices, twin, scan, series, corrupt]


@dataclass(frozen=True)
class Run:
    code: int
    out: Path
    rows: list[dict]
    stdout: str


def _rows(out: Path) -> list[dict]:
    with open(out / CSV_NAME, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def plain(inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("plain")
    code = main(["predict", *map(str, inputs), "--out", str(out)])
    return Run(code, out, _rows(out), "")


def assert_same_as_plain(run: Run, plain: Run) -> None:
    """The same rows in the same order (probabilities and check scores within 0.01) and the same mask files."""
    assert run.code == plain.code == 2
    assert len(run.rows) == len(plain.rows) == 4 + 20 + 24 + 1
    for got, want in zip(run.rows, plain.rows):
        assert {k: got[k] for k in EXACT} == {k: want[k] for k in EXACT}
        for key in ("tumour_probability", "check_score"):
            assert (got[key] == want[key] == "") or abs(float(got[key]) - float(want[key])) <= 0.01, (key, got)
    assert [r["mask_png"] for r in run.rows[:4]] == [f"{PATIENT.name}_{n}_mask.png" for n in (10, 11, 12, "10_2")]
    assert run.rows[-1]["error"] and "corrupt.tif" in run.rows[-1]["error"]
    names = {p.name for p in plain.out.iterdir()}
    assert {p.name for p in run.out.iterdir()} == names
    assert {"scan_mask.nii.gz", "flair_mask.nii.gz"} <= names
    for name in names - {CSV_NAME}:
        got, want = (run.out / name).read_bytes(), (plain.out / name).read_bytes()
        if name.endswith(".png"):
            assert got == want, name
        elif name.endswith(".nii.gz"):  # the gzip header holds the time it was written
            assert gzip.decompress(got) == gzip.decompress(want), name


@pytest.fixture(scope="class")
def local_ray() -> Iterator:
    """One local Ray session for a class's tests (``--ray`` without an address uses the session it is in); ended
    before the loopback head starts."""
    ray = pytest.importorskip("ray")
    distributed.connect(ray, "")   # how `--ray` without an address starts one
    yield ray
    ray.shutdown()


class TestLocalRay:
    def test_two_local_workers_write_what_the_plain_run_writes(self, local_ray, inputs: list[Path], plain: Run,
                                                              tmp_path: Path, capsys) -> None:
        code = main(["predict", *map(str, inputs), "--out", str(tmp_path), "--ray", "--workers", "2"])
        stdout = capsys.readouterr().out
        assert_same_as_plain(Run(code, tmp_path, _rows(tmp_path), stdout), plain)
        cpus = int(local_ray.cluster_resources()["CPU"]) // 2
        assert f"ray: 2 workers, {cpus} CPU(s) each, on 1 node(s)" in stdout
        assert f"threads={cpus}" in stdout   # each engine on the CPUs its worker asked for

    def test_a_worker_killed_midway_leaves_error_rows_and_the_rest_predicted(self, local_ray, tmp_path: Path) -> None:
        files = [str(PATIENT / f"{PATIENT.name}_{n}.tif") for n in range(1, 9)]
        before = set(local_ray.util.list_named_actors())
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(main, ["predict", *files, "--out", str(tmp_path), "--ray", "--workers", "2"])
            deadline = time.monotonic() + 120
            while not (new := sorted(set(local_ray.util.list_named_actors()) - before)):
                assert time.monotonic() < deadline and not running.done()
                time.sleep(0.01)
            local_ray.kill(local_ray.get_actor(new[0]))   # while it loads its models
            assert running.result(timeout=300) == 2
        rows = _rows(tmp_path)
        assert [r["file"] for r in rows] == files
        died = [r for r in rows if r["error"]]
        assert died and all("its Ray worker died" in r["error"] for r in died)
        for row in rows:
            assert (tmp_path / row["mask_png"]).is_file() != bool(row["error"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Head:
    port: int
    client_port: int | None
    env: dict[str, str]


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    """A Ray head on 127.0.0.1 (2 CPUs, token authentication with a token of its own); stopped at the end, alone:
    ``ray start --block`` ends its processes on SIGTERM, where ``ray stop`` would end every Ray on the machine."""
    pytest.importorskip("ray")
    client = _free_port() if importlib.util.find_spec("grpc") else None   # ray:// needs ray[client]
    port, log = _free_port(), tmp_path_factory.mktemp("head") / "head.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=2",
               "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats", "--block",
               *([f"--ray-client-server-port={client}"] if client else [])]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        deadline = time.monotonic() + 90
        for listening in filter(None, (port, client)):
            while True:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    socket.create_connection(("127.0.0.1", listening), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.5)
        yield Head(port, client, env)
    finally:
        process.terminate()
        process.wait(timeout=90)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_cluster_at_an_address_writes_what_the_plain_run_writes(head: Head, scheme: str, inputs: list[Path],
                                                                  plain: Run, tmp_path: Path) -> None:
    if scheme and head.client_port is None:
        pytest.skip("ray:// needs Ray's client (pip install -r requirements-scale.txt)")
    address = f"127.0.0.1:{head.port}" if not scheme else f"ray://127.0.0.1:{head.client_port}"
    run = subprocess.run([sys.executable, "-m", "brainseg", "predict", *map(str, inputs), "--out", str(tmp_path),
                          "--ray", address], cwd=ROOT, env=head.env, capture_output=True, text=True, timeout=600)
    assert "ray: 1 workers, 2 CPU(s) each, on 1 node(s)" in run.stdout, run.stderr[-3000:]
    assert_same_as_plain(Run(run.returncode, tmp_path, _rows(tmp_path), run.stdout), plain)


def test_without_ray_the_flag_exits_2_with_one_line(sample_slice: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None\nfrom brainseg.cli import main\n"
            f"sys.exit(main(['predict', {str(sample_slice)!r}, '--out', {str(tmp_path / 'out')!r}, '--ray']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: --ray needs Ray: pip install -r requirements-scale.txt "
                                               "(or the package's 'scale' extra)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("nodes, workers, inputs, expected", [
    ([2], 2, 10, (2, 1)), ([2], None, 10, (1, 2)), ([16], None, 10, (8, 2)), ([16], None, 3, (3, 5)),
    ([16, 16], 3, 10, (3, 8)), ([16, 4], None, 10, (10, 2)), ([8, 0], 2, 10, (2, 4))])
def test_workers_ask_for_the_most_cpus_that_still_fit_on_the_nodes(nodes, workers, inputs, expected) -> None:
    assert distributed.plan(nodes, workers, inputs) == expected


def test_more_workers_than_cpus_is_refused() -> None:
    with pytest.raises(BrainsegError, match="--workers 3: the Ray cluster has 2 CPUs"):
        distributed.plan([2], 3, 10)


def test_an_address_that_is_not_one_is_refused_before_anything_starts() -> None:
    ray = pytest.importorskip("ray")
    with pytest.raises(BrainsegError, match="expected no address"):
        distributed.connect(ray, "scan.nii.gz")
    assert not ray.is_initialized()
