"""``loadtest``: the harness CLI. The load engine's commands arrive with the load-engine issue."""

from __future__ import annotations

import argparse

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest", description="Load testing for ML model endpoints.")
    parser.add_argument("--version", action="version", version=f"loadtest {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
