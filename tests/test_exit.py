"""How a pool ends with its interpreter: Ctrl-C, and the parent killed outright.

Each scenario runs a child interpreter that owns a process pool whose workers are busy and print
their pids. The test makes itself a *child subreaper* (Linux), so every process the child leaves
behind (workers, its fork server, its resource tracker) is re-parented to the test, which waits
for each one to exit (on a pidfd) and reaps it: no zombie is left either way.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Optional

import pytest

from conftest import WAIT
from processes import assert_no_zombies, descendants, reap, subreaper, wait_exited

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and prctl(PR_SET_CHILD_SUBREAPER)"
)

TESTS = os.path.dirname(os.path.abspath(__file__))
START_METHODS = ["forkserver", "fork"]

CHILD = """
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    with Pool(2, backend="process", start_method={method!r}) as pool:
        futures = [pool.submit(jobs.announce_and_sleep, 120) for _ in range(2)]
        print("WAITING", flush=True)
        futures[0].result()
    print("NOT REACHED", flush=True)
"""

# The same without a ``with`` block: the pool is closed by jobpool's interpreter-exit hook, which
# must stop at once on Ctrl-C rather than first run the jobs still queued.
CHILD_WITHOUT_WITH = """
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    pool = Pool(2, backend="process", start_method={method!r})
    futures = [pool.submit(jobs.announce_and_sleep, 120) for _ in range(4)]
    print("WAITING", flush=True)
    futures[0].result()
    print("NOT REACHED", flush=True)
"""


class Child:
    """A child interpreter running ``CHILD``; its stdout is read line by line in a thread."""

    def __init__(self, method: str, script: str = CHILD) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script.format(tests=TESTS, method=method)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.stderr = ""
        self._out = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def worker_pids(self, count: int) -> set[int]:
        pids: set[int] = set()
        waiting = False
        deadline = time.monotonic() + WAIT
        while len(pids) < count or not waiting:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"child printed no worker pids; stderr:\n{self.stderr}")
            if line is None:
                self.proc.wait(WAIT)
                self._err.join(WAIT)
                raise AssertionError(f"child ended early; stderr:\n{self.stderr}")
            if line.startswith("WORKER "):
                pids.add(int(line.split()[1]))
            elif line == "WAITING":
                waiting = True
        return pids

    def finish(self) -> int:
        code = self.proc.wait(WAIT)
        self._out.join(WAIT)
        self._err.join(WAIT)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


@pytest.mark.parametrize("script", [CHILD, CHILD_WITHOUT_WITH], ids=["with", "without-with"])
@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_stops_the_pool_and_the_interpreter_exits(method: str, script: str) -> None:
    with subreaper():
        child = Child(method, script)
        family: set[int] = set()
        try:
            workers = child.worker_pids(2)
            family = descendants(child.proc.pid)  # workers, fork server, resource tracker
            assert workers <= family
            child.proc.send_signal(signal.SIGINT)
            still = wait_exited(workers, 1.0)
            assert not still, f"workers {still} outlived Ctrl-C by more than 1 s"
            code = child.finish()  # and the interpreter exits (within WAIT, or this raises)
        finally:
            family |= descendants(child.proc.pid)  # if the test failed before it looked
            child.kill()
            leftovers = reap(family)
        assert code in (-signal.SIGINT, 1, 130), (code, child.stderr)
        assert "KeyboardInterrupt" in child.stderr
        assert "NOT REACHED" not in child.stderr
        assert not leftovers, f"processes still there: {leftovers}"
        assert_no_zombies()


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_exit_when_the_parent_is_killed(method: str) -> None:
    with subreaper():
        child = Child(method)
        family: set[int] = set()
        try:
            workers = child.worker_pids(2)
            family = descendants(child.proc.pid)
            assert workers <= family
            child.proc.kill()  # SIGKILL: no atexit, no finally, nothing runs in the parent
            assert child.finish() == -signal.SIGKILL
            still = wait_exited(workers, 5.0)
            assert not still, f"workers {still} outlived their parent by 5 s"
        finally:
            family |= descendants(child.proc.pid)  # if the test failed before it looked
            child.kill()
            leftovers = reap(family)
        assert not leftovers, f"processes still there: {leftovers}"
        assert_no_zombies()
