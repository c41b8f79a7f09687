"""``brainseg predict --ray``: the inputs spread over Ray actors, each holding one CPU Predictor; the same CSV rows and
output files as the plain run, in the input order. The only module that imports Ray, and only when it is called.

Workers read the inputs by path (shared storage) and send each input's output files back; the driver writes them.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from brainseg.errors import BrainsegError
from brainseg.predict import PredictOptions, error_row, output_stems, predict_path

CPUS_PER_WORKER = 2     # default --workers: one per 2 CPUs of each node (the engine runs its two networks side by side)
IN_FLIGHT = 2           # inputs queued on each worker, so that it never waits for the driver
REQUIREMENTS = "requirements-scale.txt"
ADDRESS = re.compile(r"auto|local|(ray://)?[\w.-]+:\d+|(ray://)?\[[0-9a-fA-F:]+\]:\d+")


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`BrainsegError` naming what to install."""
    try:
        import ray
    except ImportError as err:
        raise BrainsegError(f"--ray needs Ray: pip install -r {REQUIREMENTS} (or the package's 'scale' extra)") from err
    return ray


def plan(node_cpus: Sequence[int], workers: int | None, inputs: int) -> tuple[int, int]:
    """How many workers, and the CPUs each asks for: the most that lets every worker fit on the nodes (on one node,
    its CPUs // workers). By default one worker per ``CPUS_PER_WORKER`` CPUs of each node; never more than inputs.

    Args:
        node_cpus: the CPUs of each live node.
        workers: the workers asked for, ``None`` for the default.
        inputs: how many inputs there are to predict.

    Returns:
        ``(workers, cpus_per_worker)``.
    """
    node_cpus = [c for c in node_cpus if c > 0]
    if workers is None:
        workers = max(1, sum(c // CPUS_PER_WORKER for c in node_cpus))
    workers = max(1, min(workers, inputs))
    for cpus in range(max(node_cpus, default=0), 0, -1):
        if sum(c // cpus for c in node_cpus) >= workers:
            return workers, cpus
    raise BrainsegError(f"--workers {workers}: the Ray cluster has {sum(node_cpus)} CPUs, and each worker needs one")


class Worker:
    """One Ray actor: a Predictor on the CPU, loaded once, its engine on the actor's CPUs; one input at a time."""

    def __init__(self, weights: str, options: PredictOptions, cpus: int, cwd: str) -> None:
        """``cwd``: the driver's working directory, where relative input paths point (when this node has it)."""
        # cpu_threads() reads it: Ray sets it to num_cpus only where it is unset, and an inherited one would
        # oversubscribe the node
        os.environ["OMP_NUM_THREADS"] = str(cpus)
        if os.path.isdir(cwd):
            os.chdir(cwd)
        import ray

        from brainseg.inference.predictor import Predictor

        self.predictor = Predictor(weights, device="cpu")  # OpenVINO: its threads from cpu_threads()
        self.options = options
        engine = self.predictor.engine
        threads = engine.segmenter.get_property("INFERENCE_NUM_THREADS")
        self.about = (f"{engine.choice.engine} {engine.choice.precision}, threads={threads}",
                      ray.get_runtime_context().get_node_id())

    def predict(self, path: str, stem: str) -> tuple[list[dict], dict[str, bytes], tuple[str, str]]:
        """The input's rows (:func:`predict_path`), its output files by name, and this worker's engine and node."""
        with tempfile.TemporaryDirectory(prefix="brainseg-ray-") as scratch:
            rows = predict_path(self.predictor, Path(path), Path(scratch), stem, self.options)
            return rows, {f.name: f.read_bytes() for f in Path(scratch).iterdir()}, self.about


def connect(ray: Any, address: str) -> bool:
    """Join the Ray cluster at ``address`` (``""``/``"local"``: start one on this machine) unless this process is in
    a Ray session already; True when this call started the session (and so must shut it down)."""
    if not ADDRESS.fullmatch(address or "local"):
        raise BrainsegError(f"--ray {address}: expected no address (a local Ray), auto, HOST:PORT or ray://HOST:PORT")
    if ray.is_initialized():
        return False
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host:  # ray.init waits many minutes for an address where nothing listens
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as err:
            raise BrainsegError(f"--ray {address}: nothing answers there ({err}); is a Ray head running "
                                f"(ray start --head)?") from err
    retries = 1 if address.startswith("ray://") else 0
    while True:
        try:
            if address in ("", "local"):
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
            return True
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as err:
            # Ray's client proxy starts one server per client and now and then fails to (a busy machine): a fresh
            # connection gets a fresh server
            if retries and "client server failed" in str(err):
                retries -= 1
                ray.shutdown()
                continue
            raise BrainsegError(f"--ray {address}: cannot join the Ray cluster ({type(err).__name__}: "
                                f"{last_line(err)}); see docs/scale.md") from err


def failure(ray: Any, path: Path, err: Exception) -> str:
    """One line for an input whose worker raised or died."""
    if isinstance(err, ray.exceptions.RayActorError):  # its last line: the exception in __init__, or why it died
        return f"{path}: its Ray worker died: {last_line(err)}"
    cause = getattr(err, "cause", None) or err
    return f"{path}: {type(cause).__name__}: {last_line(cause)}"


def last_line(err: Exception) -> str:
    """The last line of an error's message, without Ray's terminal colours."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def predict_files_ray(files: list[Path], out: Path, options: PredictOptions, weights: str, address: str,
                      workers: int | None = None) -> list[dict]:
    """Predict the inputs on Ray workers and write their outputs to ``out`` (created if missing), as
    :func:`~brainseg.predict.predict_files` does: the same rows, in the order given, and the same files.

    Args:
        files: the inputs, as paths the workers can read (relative ones against this working directory).
        out: the output folder, written by this process.
        options: how masks are made.
        weights: the weights folder, the same path on every node.
        address: the cluster (``""``: a local Ray; ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``).
        workers: how many workers, ``None`` for :func:`plan`'s default.

    Returns:
        The rows of every input in the order given; an input whose worker failed or died is one error row.
    """
    ray = import_ray()
    out.mkdir(parents=True, exist_ok=True)
    stems = output_stems(files)
    started = connect(ray, address)
    actors: list = []
    try:
        nodes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
        count, cpus = plan(nodes, workers, len(files))
        remote, run = ray.remote(Worker), uuid.uuid4().hex[:8]   # named brainseg-RUN-I in `ray list actors`
        actors = [remote.options(num_cpus=cpus, name=f"brainseg-{run}-{i}").remote(weights, options, cpus, os.getcwd())
                  for i in range(count)]
        results: list[list[dict]] = [[] for _ in files]
        waiting, pending, alive, seen = deque(range(len(files))), {}, set(range(count)), set()

        def feed(worker: int) -> None:
            while waiting and sum(w == worker for _, w in pending.values()) < IN_FLIGHT:
                index = waiting.popleft()
                pending[actors[worker].predict.remote(str(files[index]), stems[index])] = (index, worker)

        with tqdm(total=len(files), desc=f"predict on {count} Ray workers", unit="file") as progress:
            for worker in alive:
                feed(worker)
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                index, worker = pending.pop(ready)
                try:
                    results[index], written, about = ray.get(ready)
                    seen.add(about)
                    for name, data in written.items():
                        (out / name).write_bytes(data)
                except ray.exceptions.RayError as err:   # the input's task raised, or its worker died
                    if isinstance(err, ray.exceptions.RayActorError):
                        alive.discard(worker)
                    results[index] = [error_row(files[index], failure(ray, files[index], err))]
                    tqdm.write(f"error: {results[index][0]['error']}", file=sys.stderr)
                progress.update()
                for worker in alive:
                    feed(worker)
        for index in waiting:  # every worker died
            results[index] = [error_row(files[index], f"{files[index]}: no Ray worker left to predict it")]
        engines = sorted({engine for engine, _ in seen}) or ["no worker finished an input"]
        nodes_used = len({node for _, node in seen})
        print(f"ray: {count} workers, {cpus} CPU(s) each, on {nodes_used} node(s); {'; '.join(engines)}")
        return [row for rows in results for row in rows]
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
