"""What runs the two networks for a :class:`~brainseg.inference.predictor.Predictor`, and the one rule that picks it.

``torch`` (bf16 autocast or eager fp32; the engine on a CUDA GPU) or ``openvino`` (the same modules converted and
compiled for the CPU, cached on disk by the weights' SHA-256). Every engine takes a preprocessed ``Bx3x256x256``
float32 batch and returns float32 segmenter probabilities ``BxMx256x256``, classifier features ``BxD`` and logits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from scipy.special import expit

from brainseg.errors import BrainsegError
from brainseg.models.weights import sha256
from brainseg.paths import PACKAGE_DIR, cache_root

ENGINES = ("auto", "openvino", "torch")
PRECISIONS = ("auto", "bf16", "fp32")
CACHE_KEEP = 3  # converted models kept per kind
T = TypeVar("T")
U = TypeVar("U")
CODE_FILES = (
    Path(__file__).with_name("engine.py"),
    Path(__file__).with_name("torch_engine.py"),
    PACKAGE_DIR / "models" / "networks.py",
)
# the text of CODE_FILES is part of the cache key


@dataclass(frozen=True)
class Choice:
    """An engine and the precision it runs in."""

    engine: str  # "openvino" or "torch"
    precision: str  # "bf16" or "fp32"


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_threads() -> int:
    """Threads for inference: ``$OMP_NUM_THREADS`` when set, else the CPUs this process may run on."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))


def choose(device_type: str, engine: str = "auto", precision: str = "auto", cpu_bf16: bool = False) -> Choice:
    """The engine for a ``device_type``: OpenVINO on a CPU, torch on a GPU, eager torch for an explicit
    ``precision="fp32"`` with ``engine="auto"`` (the reference); bf16 where the hardware has it.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        engine: ``"auto"``, ``"openvino"`` (CPU only) or ``"torch"``.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        cpu_bf16: whether the CPU has bf16 instructions (decides ``"auto"`` precision on a CPU).

    Returns:
        The engine and precision chosen.
    """
    if engine not in ENGINES or precision not in PRECISIONS:
        raise BrainsegError(
            f"engine {engine!r}, precision {precision!r}: expected an engine of {ENGINES} "
            f"and a precision of {PRECISIONS}"
        )
    if engine == "auto":
        engine = "torch" if device_type != "cpu" or precision == "fp32" else "openvino"
    if engine == "openvino" and device_type != "cpu":
        raise BrainsegError(f"engine 'openvino' runs on the CPU, not on {device_type!r}; use engine='torch' there")
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" or cpu_bf16 else "fp32"
    return Choice(engine, precision)


class Engine(Protocol):
    """Runs both networks on a preprocessed ``Bx3x256x256`` float32 batch."""

    choice: Choice

    def segment(self, batch: np.ndarray) -> np.ndarray:
        """Segmenter probabilities ``BxMx256x256``, one channel per member."""

    def classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classifier pooled features ``BxD`` and logits ``Bx2``, from one call."""

    def both(
        self, batch: np.ndarray, measure: Callable[[], U], judge: Callable[[np.ndarray, U], T]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, T]:
        """Segmenter probabilities, classifier features and logits, and ``judge(features, measure())``:
        ``measure`` needs no network (the input check's pixel layers) and may run beside the classifier.

        Args:
            batch: ``Bx3x256x256`` float32 preprocessed batch.
            measure: the network-free measures of the batch's slices.
            judge: turns the classifier's ``BxD`` features and those measures into the input checks.

        Returns:
            Probabilities ``BxMx256x256``, features ``BxD``, logits ``Bx2`` and what ``judge`` returned.
        """


def cache_key(weights_digest: str, openvino_version: str) -> str:
    """Names one converted model: the weights, the OpenVINO version and the code that builds the graph."""
    digest = hashlib.sha256(f"{weights_digest}\0{openvino_version}".encode())
    for path in CODE_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def cached_model(core, convert: Callable[[], Any], folder: Path):
    """The converted model from ``folder`` (``model.xml``, ``model.bin``, the bin's SHA-256 in ``model.sha256``);
    when absent or damaged, ``convert()`` makes it (an ``openvino.Model``), which is written there first. An
    unwritable cache folder only means converting again next time.

    Args:
        core: the ``openvino.Core`` that reads the cached model.
        convert: makes the ``openvino.Model`` when the cache does not hold it.
        folder: the cache folder of this model (one per weights, OpenVINO version and code).

    Returns:
        The ``openvino.Model``, read from the cache or just converted.
    """
    import openvino as ov

    if complete(folder):
        return core.read_model(folder / "model.xml")
    model = convert()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    except OSError:
        return model
    try:
        ov.save_model(model, staging / "model.xml", compress_to_fp16=False)
        (staging / "model.sha256").write_text(sha256(staging / "model.bin"))
        if not complete(folder):  # a complete copy (another process's) stays: others may be reading it
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)  # atomic; fails when another process's copy landed there first
            prune(folder)
    except OSError:
        pass  # another process wrote it first, or the disk is full: this process goes on with its own conversion
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole converted model: ``model.xml`` and a ``model.bin`` of the recorded SHA-256."""
    xml, binary, digest = folder / "model.xml", folder / "model.bin", folder / "model.sha256"
    return xml.is_file() and binary.is_file() and digest.is_file() and sha256(binary) == digest.read_text().strip()


def prune(newest: Path, keep: int = CACHE_KEEP) -> None:
    """Remove all but the ``keep`` most recently written converted models of ``newest``'s kind (other weights,
    code or OpenVINO versions), so the cache does not grow with every change."""
    kind = newest.name.rsplit("-", 1)[0]
    entries = sorted(
        (p for p in newest.parent.glob(f"{kind}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for stale in [p for p in entries if p != newest][keep - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)


# slices per OpenVINO segmenter call: per-slice ms at batch 1/2/4/8/16 were 5.0/4.8/5.2/5.5/6.2 (Intel Xeon, AMX, bf16)
SEGMENTER_CHUNK = 2


class OpenVinoEngine:
    """Both modules compiled by OpenVINO for the CPU; thread-safe (one infer request per call)."""

    def __init__(
        self,
        converters: dict[str, Callable[[], Any]],
        digests: dict[str, str],
        precision: str,
        threads: int,
        cache: Path | None = None,
    ) -> None:
        """``converters[kind]()``: the ``openvino.Model`` of the ``"segmenter"`` or the ``"classifier"``, asked for
        only when it is not in the cache yet (:func:`~brainseg.inference.torch_engine.converters`); ``digests``:
        SHA-256 of each kind's
        weights (names the cached models)."""
        import openvino as ov
        from threadpoolctl import threadpool_limits

        # numpy's BLAS (the input check's products) on one thread: OpenBLAS threads keep spinning after a call and
        # took the cores from the next OpenVINO call (classifier 13.7 ms instead of 8.0 at batch 1, 2-core Xeon)
        threadpool_limits(1, user_api="blas")
        core = ov.Core()
        cache = cache_root() if cache is None else cache
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        # for both(): each network on half the cores, unpinned, so that the two run side by side
        beside = {**config, "INFERENCE_NUM_THREADS": max(1, threads // 2), "ENABLE_CPU_PINNING": False}
        compiled, alongside = {}, {}
        for kind in ("segmenter", "classifier"):
            folder = cache / "openvino" / f"{kind}-{cache_key(digests[kind], ov.__version__)}"
            model = cached_model(core, converters[kind], folder)
            # no OpenVINO CACHE_DIR: a model imported from its compiled blob holds its own copy of the weights
            # (more resident memory for a little less start; docs/experiments.md)
            compiled[kind] = core.compile_model(model, "CPU", config)
            alongside[kind] = core.compile_model(model, "CPU", beside) if threads >= 2 else compiled[kind]
        self.segmenter, self.classifier = compiled["segmenter"], compiled["classifier"]
        # each compiled model's first inference, one at a time: the first calls of two freshly compiled models
        # from two threads at once hung inside OpenVINO once (both threads waiting in get_input_tensor, CI)
        blank = np.zeros((1, 3, 256, 256), np.float32)
        for model in {id(m): m for m in (*compiled.values(), *alongside.values())}.values():
            self._run(model, blank)
        self._segmenter_beside, self._classifier_beside = alongside["segmenter"], alongside["classifier"]
        self._beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="segmenter") if threads >= 2 else None
        ran = str(self.segmenter.get_property("INFERENCE_PRECISION_HINT"))
        self.choice = Choice("openvino", "bf16" if "bf16" in ran or "bfloat16" in ran else "fp32")

    @staticmethod
    def _run(compiled, batch: np.ndarray) -> list[np.ndarray]:
        request = compiled.create_infer_request()  # the batch shared, not copied: 0.3 ms of a 10 ms prediction
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)}, share_inputs=True)
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    def segment(self, batch: np.ndarray) -> np.ndarray:
        return self._segment(self.segmenter, batch)

    def classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self._run(self.classifier, batch)
        return features, logits

    def both(
        self, batch: np.ndarray, measure: Callable[[], U], judge: Callable[[np.ndarray, U], T]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, T]:
        """:meth:`Engine.both`: with two threads or more, the segmenter then ``measure`` run beside the
        classifier, each network compiled for half the threads; else one after the other.

        Args:
            batch: ``Bx3x256x256`` float32 preprocessed batch.
            measure: the network-free measures of the batch's slices.
            judge: turns the classifier's ``BxD`` features and those measures into the input checks.

        Returns:
            Probabilities ``BxMx256x256``, features ``BxD``, logits ``Bx2`` and what ``judge`` returned.
        """
        if self._beside is None:
            features, logits = self.classify(batch)
            return self.segment(batch), features, logits, judge(features, measure())

        def segment_then_measure() -> tuple[np.ndarray, U]:  # the segmenter is the shorter of the two
            return self._segment(self._segmenter_beside, batch), measure()

        segmenting = self._beside.submit(segment_then_measure)
        features, logits = self._run(self._classifier_beside, batch)
        probabilities, measured = segmenting.result()
        return probabilities, features, logits, judge(features, measured)

    def _segment(self, compiled, batch: np.ndarray) -> np.ndarray:
        """In slices of ``SEGMENTER_CHUNK``: the ResUNet's full-resolution maps of a larger batch leave the cache."""
        logits = [
            self._run(compiled, batch[start : start + SEGMENTER_CHUNK])[0]
            for start in range(0, len(batch), SEGMENTER_CHUNK)
        ]
        return expit(np.concatenate(logits))
