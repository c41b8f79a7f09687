"""The package as a user installs it: the wheel's contents, its console script, where it finds its weights, and a
command line that starts without the heavy libraries."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_lists_every_subpackage_and_the_data_folders() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    tree = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "brainseg").rglob("__init__.py")}
    assert listed == tree | {"brainseg._weights", "brainseg._samples"}


def test_weights_come_from_brainseg_weights_when_it_is_set(tmp_path: Path) -> None:
    code = "from brainseg.paths import WEIGHTS_DIR; print(WEIGHTS_DIR)"
    run = lambda env: subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                     check=True, env=env).stdout.strip()
    plain = {k: v for k, v in os.environ.items() if k != "BRAINSEG_WEIGHTS"}
    assert run(plain) == str(ROOT / "weights")
    assert run({**plain, "BRAINSEG_WEIGHTS": str(tmp_path)}) == str(tmp_path)


def test_help_starts_without_torch_openvino_or_streamlit() -> None:
    code = ("import sys; from brainseg.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'openvino', 'streamlit') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("[]"), result.stdout
    assert all(name in result.stdout for name in ("predict", "evaluate", "checksums"))


def test_plain_predict_and_the_app_import_no_ray(sample_slice: Path, tmp_path: Path) -> None:
    """Ray is optional (requirements-scale.txt): only ``predict --ray`` imports it."""
    code = (f"import sys; from brainseg.cli import main\nassert main(['predict', {str(sample_slice)!r}, '--out', "
            f"{str(tmp_path)!r}]) == 0\nimport brainseg.app.views, brainseg.app.cache\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("[]"), result.stdout[-2000:]
    assert (tmp_path / "predictions.csv").is_file()


def test_the_wheel_carries_the_weights_samples_pages_and_the_console_script(tmp_path: Path) -> None:
    """``pip wheel .``: what ``pip install .`` installs (a registry is needed for the build backend)."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "setuptools" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("no package registry to fetch the build backend from")
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("brainseg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"brainseg/_weights/{p.name}" for p in (ROOT / "weights").glob("*.safetensors")}
    assert shipped and shipped <= names
    assert {"brainseg/_weights/SHA256SUMS", "brainseg/_weights/pipeline.json", "brainseg/_weights/split.json",
            "brainseg/app/pages/gallery.py", "brainseg/cli/predict.py"} <= names
    assert any(n.startswith("brainseg/_samples/TCGA_") and n.endswith("_mask.tif") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "brainseg = brainseg.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
