"""Command line: ``brainseg COMMAND ...`` (or ``python -m brainseg``); one module a command, each with
``add_arguments(parser)`` and ``run(args)``; a command imports what it needs inside ``run``, so ``--help`` is quick."""
from __future__ import annotations

import argparse
import importlib
import sys

from brainseg.errors import BrainsegError

COMMANDS = {  # name: help
    "train": "train the segmenter or the classifier",
    "evaluate": "metrics of the shipped weights on a kaggle_3m folder",
    "crossval": "out-of-fold figures of the fold members over the development patients",
    "ensemble": "the fold members together on patients none of them trained on",
    "tune": "choose the pipeline's thresholds on the validation patients",
    "samples": "bundle test-split patients into samples/",
    "predict": "masks, overlays and a CSV for slice files and volumes, with the input check",
    "calibrate": "fit the input check on the training split, thresholds on validation",
    "landmarks": "fit the intensity standard for 12/16-bit and float scans on the training patients",
    "encodings": "flagged slices and Dice of the same scans stored as 8-bit, int16, float and 12-bit DICOM",
    "benchmark": "latency, throughput, cold start, memory and FLOPs of inference",
    "checksums": "write or check weights/SHA256SUMS",
    "explain": "heat-map hit rates and TTA against the plain model on a split",
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command; a :class:`BrainsegError` prints one line and returns 2."""
    parser = argparse.ArgumentParser(prog="brainseg", description="Brain-tumour detection and segmentation on "
                                     "LGG MRI: training, evaluation and prediction.")
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, help_text in COMMANDS.items():
        modules[name] = importlib.import_module(f"brainseg.cli.{name}")
        modules[name].add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        modules[args.command].run(args)
    except BrainsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
