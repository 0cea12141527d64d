"""Command line: ``python -m jobpool demo`` (and the subcommands added beside it)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobpool",
        description="jobpool: one Pool over threads, processes and Dask.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="measure threads vs processes on this machine, on I/O-bound and CPU-bound work",
    )
    demo.add_argument("--workers", type=int, default=None, help="workers per pool (default: cpus)")
    demo.add_argument("--quick", action="store_true", help="smaller workloads (a few seconds)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(workers=args.workers, quick=args.quick)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
