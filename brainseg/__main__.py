"""Command line: ``python -m brainseg COMMAND ...``; each command is a module with ``add_arguments`` and ``run``."""
from __future__ import annotations

import argparse
import importlib
import sys

from brainseg.errors import BrainsegError

COMMANDS = {  # name: (module, help)
    "train": ("brainseg.train", "train the segmenter or the classifier"),
    "evaluate": ("brainseg.evaluate", "metrics of the shipped weights on a kaggle_3m folder"),
    "crossval": ("brainseg.crossval", "out-of-fold figures of the fold members over the development patients"),
    "ensemble": ("brainseg.ensemble", "the fold members together on patients none of them trained on"),
    "tune": ("brainseg.tune", "choose the pipeline's thresholds on the validation patients"),
    "samples": ("brainseg.samples", "bundle test-split patients into samples/"),
    "predict": ("brainseg.predict", "masks, overlays and a CSV for slice files and volumes, with the input check"),
    "calibrate": ("brainseg.calibrate", "fit the input check on the training split, thresholds on validation"),
    "benchmark": ("brainseg.benchmark", "latency, throughput, cold start, memory and FLOPs of inference"),
    "checksums": ("brainseg.checksums", "write or check weights/SHA256SUMS"),
    "explain": ("brainseg.explain", "heat-map hit rates and TTA against the plain model on a split"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(module_name)
        modules[name].add_arguments(commands.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        modules[args.command].run(args)
    except BrainsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
