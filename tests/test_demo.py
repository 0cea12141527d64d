"""``python -m jobpool demo`` runs both workloads on both backends and gives a verdict."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jobpool", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "I/O-bound" in out and "CPU-bound" in out
    assert "threads" in out and "processes" in out
    verdicts = [line for line in out.splitlines() if ": use backend=" in line]
    assert len(verdicts) == 2
    # Waiting jobs overlap on threads by an order of magnitude; that verdict is stable.
    assert verdicts[0].startswith("I/O-bound: use backend='thread'")
