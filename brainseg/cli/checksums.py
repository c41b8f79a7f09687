"""``brainseg checksums``: write or check weights/SHA256SUMS."""
from __future__ import annotations

import argparse

from brainseg.paths import WEIGHTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=str(WEIGHTS_DIR), help="weights folder (default: the shipped weights/)")
    parser.add_argument("--check", action="store_true", help="verify the files against SHA256SUMS, write nothing")


def run(args: argparse.Namespace) -> None:
    from brainseg.models.checksums import check_checksums, write_checksums
    from brainseg.models.weights import CHECKSUMS
    if args.check:
        names = check_checksums(args.dir)
        print(f"{CHECKSUMS}: {len(names)} files match in {args.dir}")
    else:
        path = write_checksums(args.dir)
        print(f"wrote {path}")
