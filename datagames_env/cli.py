"""Kept for imports written before the shared harness (``datagames_env.cli:main``): see
:mod:`datagames_env.harness.cli`."""

import sys

from .harness.cli import TRAINERS, _parse_overrides, build_parser, main, make_console

__all__ = ["TRAINERS", "_parse_overrides", "build_parser", "main", "make_console"]

if __name__ == "__main__":
    sys.exit(main())
