"""Command line: ``python -m brainseg train|evaluate|predict|benchmark ...``."""
from __future__ import annotations

import argparse
import sys

from brainseg.errors import BrainsegError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from brainseg import evaluate, train
    train.add_arguments(commands.add_parser("train", help="train the segmenter or the classifier"))
    evaluate.add_arguments(commands.add_parser("evaluate", help="metrics of the shipped weights on a kaggle_3m folder"))
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            train.run(args)
        elif args.command == "evaluate":
            evaluate.run(args)
    except BrainsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
