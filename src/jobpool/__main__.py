"""Command line: ``python -m jobpool demo``, ``python -m jobpool advise`` (and others)."""

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
        help="threads or processes? measured on this machine, for jobs that wait and jobs that "
        "compute",
    )
    demo.add_argument("--workers", type=int, default=None, help="workers per pool (default: cpus)")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="shorter measurements of the same jobs, with the same verdicts (about 10 s)",
    )
    advise = commands.add_parser(
        "advise",
        help="time your function serially, on threads and on processes; recommend a backend",
        description="Call module:function(args...) serially and on each local backend, measure "
        "wall time, CPU time, GIL contention and pickling cost, and recommend a backend and a "
        "worker count. Arguments are Python literals when they parse as such (3, 0.5, '[1, 2]'), "
        "else strings; name=value passes a keyword argument. Options go before the function.",
    )
    advise.add_argument(
        "--budget", type=float, default=1.0, help="seconds per measured batch (default: 1)"
    )
    advise.add_argument(
        "--workers", type=int, default=None, help="workers to compare at (default: cpus)"
    )
    advise.add_argument("target", metavar="module:function", help="the function to measure")
    advise.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(workers=args.workers, quick=args.quick)
    if args.command == "advise":
        from ._advise import run_advise

        return run_advise(args.target, args.args, budget=args.budget, workers=args.workers)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
