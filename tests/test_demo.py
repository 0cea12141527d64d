"""``python -m jobpool demo`` gives the same verdicts run after run, even on a busy machine.

The demo is run as a user runs it, in a fresh interpreter, while another process keeps one CPU
busy: six full runs and two ``--quick`` ones must all give threads for the waiting jobs and
processes for the computing ones. Its output never states a speed below 1 as "faster".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import WAIT
from jobpool._advise import usable_cpus
from jobpool._demo import Kind, verdict

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"waiting jobs": "use backend='thread'", "computing jobs": "use backend='process'"}
FULL_RUNS = 6
QUICK_RUNS = 2


def run_demo(*options: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "jobpool", "demo", *options],
        capture_output=True,
        text=True,
        timeout=10 * WAIT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "measuring" in done.stderr  # the progress line
    return done.stdout


def verdicts(out: str) -> dict[str, str]:
    """``{"waiting jobs": "use backend='thread'", ...}``: each verdict up to its first period
    (or colon, for "cannot tell")."""
    found = {}
    for line in out.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and name in EXPECTED:
            found[name] = re.split(r"[.:]", rest, maxsplit=1)[0]
    return found


@pytest.fixture
def one_cpu_busy() -> Iterator[None]:
    """Another process spins on one CPU for the whole test."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait(WAIT)


@pytest.mark.slow
@pytest.mark.linux_only("proc")  # steady under load thanks to schedstat: it discounts the load
@pytest.mark.skipif(usable_cpus() < 2, reason="the verdict for computing jobs needs 2 CPUs")
def test_verdicts_are_the_same_on_every_run_with_one_cpu_busy(one_cpu_busy: None) -> None:
    outputs = [run_demo() for _ in range(FULL_RUNS)] + [
        run_demo("--quick") for _ in range(QUICK_RUNS)
    ]
    seen = [verdicts(out) for out in outputs]
    report = "\n\n".join(outputs)
    assert seen == [EXPECTED] * len(outputs), report
    for out in outputs:
        assert "faster" not in out, out
        assert not re.search(r"\b0\.\d+ times as fast", out), out


@pytest.mark.slow
def test_quick_demo_says_what_it_measures() -> None:
    out = run_demo("--quick")
    assert out.startswith("jobpool demo: should your jobs run on threads or on processes?")
    assert "on threads" in out and "on processes" in out
    assert set(verdicts(out)) == set(EXPECTED), out


def test_disagreeing_measurements_give_no_verdict() -> None:
    kind = Kind("computing jobs", "computing", abs, (1,))
    kind.advice = [SimpleNamespace(backend=b) for b in ("thread", "process", "thread")]  # type: ignore[misc]
    line = verdict(kind)
    assert line.startswith("cannot tell: 3 measurements disagreed (thread, process, thread)")
