#!/usr/bin/env python
"""How soon workers exit after their parent is SIGKILLed, with and without Linux's pidfds.

    python benchmarks/parent_death.py              # 5 rounds per mode and start method
    python benchmarks/parent_death.py --rounds 20

A child interpreter makes a pool of 2 process workers, each running a job that sleeps; this
script waits until both run, kills the child with SIGKILL, and measures the time from the kill
to each worker's exit (it sleeps on a pidfd of each worker: Linux only). Modes: as jobpool runs
on Linux (a pidfd of the parent, and the death-notice pipe), and ``JOBPOOL_PORTABLE=1`` (the
death-notice pipe alone, with ``os.getppid()`` compared once a second as a backstop), which is
what macOS runs. Workers that are not told at once would show the backstop's 1 s.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import os
import time
from jobpool import Pool


def busy():
    os.write(1, f"{{os.getpid()}}\\n".encode())
    time.sleep(600)


if __name__ == "__main__":
    pool = Pool(2, backend="process", start_method={method!r})
    futures = [pool.submit(busy) for _ in range(2)]
    time.sleep(600)
"""

MODES = {"linux (pidfd + pipe)": {}, "portable (pipe)": {"JOBPOOL_PORTABLE": "1"}}


def one_round(method: str, env: dict[str, str]) -> list[float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOOL_")}
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "src"), environ.get("PYTHONPATH")])
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(method=method)],
        stdout=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        assert child.stdout is not None
        pids = [int(child.stdout.readline()) for _ in range(2)]
        fds = {os.pidfd_open(pid): pid for pid in pids}
        time.sleep(0.2)  # the workers' watch threads are asleep by now
        killed = time.perf_counter()
        child.kill()
        exited: list[float] = []
        waiting = set(fds)
        while waiting:
            ready, _, _ = select.select(list(waiting), [], [], 30)
            if not ready:
                raise RuntimeError(f"workers {[fds[fd] for fd in waiting]} outlived 30 s")
            now = time.perf_counter()
            for fd in ready:
                exited.append(now - killed)
                waiting.discard(fd)
                os.close(fd)
        return exited
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for pid in locals().get("pids", []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not hasattr(os, "pidfd_open"):
        sys.exit("this measurement sleeps on pidfds: Linux 5.3 and Python 3.9 or later")
    print("| mode | start method | median ms | max ms |")
    print("|---|---|---|---|")
    for mode, env in MODES.items():
        for method in ("forkserver", "fork"):
            samples = [t for _ in range(args.rounds) for t in one_round(method, env)]
            median = statistics.median(samples) * 1000
            print(f"| {mode} | {method} | {median:.1f} | {max(samples) * 1000:.1f} |")


if __name__ == "__main__":
    main()
