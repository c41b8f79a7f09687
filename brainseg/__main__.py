"""``python -m brainseg COMMAND ...``: the same as the ``brainseg`` console script."""
import sys

from brainseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
