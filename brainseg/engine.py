"""What runs the two networks for a :class:`brainseg.inference.Predictor`, and the one rule that picks it.

- ``torch``: the PyTorch modules themselves, under bf16 autocast (``precision="bf16"``, channels_last) or in eager
  fp32 (the reference). The engine on a CUDA GPU.
- ``openvino``: the same modules converted by ``openvino.convert_model`` and compiled for the CPU with
  ``INFERENCE_PRECISION_HINT`` bf16 (where the CPU has native bf16) or f32. The classifier is converted with two
  outputs, pooled features (for the input check) and logits, so one call gives both. Conversion takes 15-25 s
  per model on a busy 2-core CPU, so the converted model (OpenVINO IR, its folded weights kept in fp32: in fp16
  the f32 engine was 0.025 off torch fp32) is kept in a cache folder named by the weights' SHA-256, the
  OpenVINO version and the model code; later loads read it back (about 0.5 s) after checking its SHA-256.

Every engine answers with the same float32 arrays: segmenter probabilities ``BxMx256x256`` (one channel per
member of an :class:`brainseg.models.Ensemble`, ``M = 1`` for one ResUNet), classifier pooled features ``BxD`` and
logits ``Bx2``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from brainseg.errors import BrainsegError
from brainseg.models import Classifier, resize_square
from brainseg.preprocess import MODEL_SIZE
from brainseg.weights import sha256

ENGINES = ("auto", "openvino", "torch")
PRECISIONS = ("auto", "bf16", "fp32")
CACHE_KEEP = 3              # converted models kept per kind
CODE_FILES = (Path(__file__), Path(__file__).with_name("models.py"))  # their text is part of the cache key


@dataclass(frozen=True)
class Choice:
    """An engine and the precision it runs in."""

    engine: str      # "openvino" or "torch"
    precision: str   # "bf16" or "fp32"


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose(device_type: str, engine: str = "auto", precision: str = "auto", cpu_bf16: bool = False) -> Choice:
    """The engine for a ``device_type`` ("cpu" or "cuda"): OpenVINO on a CPU, torch on a GPU, eager torch for an
    explicit ``precision="fp32"`` with ``engine="auto"`` (the reference); bf16 where the hardware has it."""
    if engine not in ENGINES or precision not in PRECISIONS:
        raise BrainsegError(f"engine {engine!r}, precision {precision!r}: expected an engine of {ENGINES} "
                            f"and a precision of {PRECISIONS}")
    if engine == "auto":
        engine = "torch" if device_type != "cpu" or precision == "fp32" else "openvino"
    if engine == "openvino" and device_type != "cpu":
        raise BrainsegError(f"engine 'openvino' runs on the CPU, not on {device_type!r}; use engine='torch' there")
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" or cpu_bf16 else "fp32"
    return Choice(engine, precision)


class Engine(Protocol):
    """Runs both networks on a preprocessed ``Bx3x256x256`` batch."""

    choice: Choice

    def segment(self, batch: torch.Tensor) -> np.ndarray:
        """Segmenter probabilities ``BxMx256x256``, one channel per member."""

    def classify(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Classifier pooled features ``BxD`` and logits ``Bx2``, from one call."""


class TorchEngine:
    """The PyTorch modules, under bf16 autocast or in eager fp32."""

    def __init__(self, segmenter: nn.Module, classifier: Classifier, device: torch.device, precision: str) -> None:
        self.segmenter, self.classifier, self.device = segmenter, classifier, device
        self.choice = Choice("torch", precision)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.choice.precision == "bf16")

    @torch.inference_mode()
    def segment(self, batch: torch.Tensor) -> np.ndarray:
        with self.autocast():
            logits = self.segmenter(batch)
        return torch.sigmoid(logits.float()).cpu().numpy()

    @torch.inference_mode()
    def classify(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with self.autocast():
            features = self.classifier.features(batch).float()
        logits = self.classifier.logits(features)  # fp32: bf16 logits near 4 round in steps of 0.016
        return features.cpu().numpy(), logits.cpu().numpy()


class _FeaturesAndLogits(nn.Module):
    """The classifier with both outputs, for conversion: pooled features ``BxD`` and logits ``Bx2``. Converted
    for inputs already at the backbone's ``input_size``: the resize runs in torch before the compiled call
    (OpenVINO's antialiased resize cost 0.4 s on each new batch shape and 2x at batch 8)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier, self.input_size = classifier, classifier.input_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.classifier.features(x)
        return features, self.classifier.logits(features)


def cache_root() -> Path:
    """Where converted models are kept: ``$BRAINSEG_CACHE_DIR`` or ``~/.cache/brainseg``."""
    return Path(os.environ.get("BRAINSEG_CACHE_DIR") or Path.home() / ".cache" / "brainseg")


def cache_key(weights_digest: str, openvino_version: str) -> str:
    """Names one converted model: the weights, the OpenVINO version and the code that builds the graph."""
    digest = hashlib.sha256(f"{weights_digest}\0{openvino_version}".encode())
    for path in CODE_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _convert(module: nn.Module, size: int = MODEL_SIZE):
    """``openvino.Model`` of ``module`` for any batch of ``3 x size x size`` inputs."""
    import openvino as ov
    example = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the classifier's resize branch, which this size skips
        return ov.convert_model(module.eval(), example_input=example, input=[-1, 3, size, size])


def cached_model(core, build: Callable[[], nn.Module], folder: Path):
    """The converted module from ``folder`` (``model.xml``, ``model.bin``, the bin's SHA-256 in
    ``model.sha256``); when absent or damaged, ``build()`` makes the torch module, which is converted and
    written there first. An unwritable cache folder only means converting again next time."""
    import openvino as ov
    xml, binary, digest = folder / "model.xml", folder / "model.bin", folder / "model.sha256"
    if xml.is_file() and binary.is_file() and digest.is_file() and sha256(binary) == digest.read_text().strip():
        return core.read_model(xml)
    module = build()
    model = _convert(module, getattr(module, "input_size", MODEL_SIZE))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    except OSError:
        return model
    try:
        ov.save_model(model, staging / "model.xml", compress_to_fp16=False)
        (staging / "model.sha256").write_text(sha256(staging / "model.bin"))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        prune(folder)
    except OSError:
        pass  # another process wrote it first, or the disk is full: this process goes on with its own conversion
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def prune(newest: Path, keep: int = CACHE_KEEP) -> None:
    """Remove all but the ``keep`` most recently written converted models of ``newest``'s kind (other weights,
    code or OpenVINO versions), so the cache does not grow with every change."""
    kind = newest.name.rsplit("-", 1)[0]
    entries = sorted((p for p in newest.parent.glob(f"{kind}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for stale in [p for p in entries if p != newest][keep - 1:]:
        shutil.rmtree(stale, ignore_errors=True)


class OpenVinoEngine:
    """Both modules compiled by OpenVINO for the CPU; thread-safe (one infer request per call)."""

    def __init__(self, modules: Callable[[str], nn.Module], digests: dict[str, str], precision: str,
                 threads: int, cache: Path | None = None) -> None:
        """``modules(kind)``: the torch segmenter or classifier, asked for only when its converted model is not
        in the cache; ``digests``: SHA-256 of the segmenter's and the classifier's weights file (names the
        cached models)."""
        import openvino as ov
        core = ov.Core()
        cache = cache_root() if cache is None else cache
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        compiled = {}
        builders = {"segmenter": lambda: modules("segmenter"),
                    "classifier": lambda: _FeaturesAndLogits(modules("classifier"))}
        for kind, build in builders.items():
            folder = cache / "openvino" / f"{kind}-{cache_key(digests[kind], ov.__version__)}"
            compiled[kind] = core.compile_model(cached_model(core, build, folder), "CPU", config)
        self.segmenter, self.classifier = compiled["segmenter"], compiled["classifier"]
        self.classifier_size = self.classifier.input(0).get_partial_shape()[2].get_length()  # backbone input_size
        ran = str(self.segmenter.get_property("INFERENCE_PRECISION_HINT"))
        self.choice = Choice("openvino", "bf16" if "bf16" in ran or "bfloat16" in ran else "fp32")

    @staticmethod
    def _run(compiled, batch: torch.Tensor) -> list[np.ndarray]:
        request = compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(batch.cpu().numpy())})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    def segment(self, batch: torch.Tensor) -> np.ndarray:
        logits, = self._run(self.segmenter, batch)
        return torch.sigmoid(torch.from_numpy(logits)).numpy()

    def classify(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self._run(self.classifier, resize_square(batch, self.classifier_size))
        return features, logits
