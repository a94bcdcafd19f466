"""`python -m neurelay.operator`: the operator without the `neurelay` CLI (tests, images)."""

from __future__ import annotations

import argparse
import sys

from neurelay.operator.running import add_arguments, main_from_args


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neurelay.operator", description="Run the Neurelay operator."
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
