"""How a pool ends with its interpreter: Ctrl-C, and the parent killed outright.

Each scenario runs a child interpreter that owns a process pool whose workers are busy and print
their pids. The test makes itself a *child subreaper* (Linux), so every process the child leaves
behind (workers, its fork server, its resource tracker) is re-parented to the test, which waits
for each one to exit (on a pidfd) and reaps it: no zombie is left either way.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from proctree import Child, assert_no_zombies, descendants, reap, subreaper, wait_exited

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and prctl(PR_SET_CHILD_SUBREAPER)"
)

TESTS = os.path.dirname(os.path.abspath(__file__))
START_METHODS = ["forkserver", "fork"]

CHILD = """
import os
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    with Pool(2, backend="process", start_method={method!r}) as pool:
        futures = [pool.submit(jobs.announce_and_sleep, 120) for _ in range(2)]
        os.write(1, b"WAITING\\n")  # one write, so that no worker line splits it
        futures[0].result()
    print("NOT REACHED", flush=True)
"""

# The same without a ``with`` block: the pool is closed by jobpool's interpreter-exit hook, which
# must stop at once on Ctrl-C rather than first run the jobs still queued.
CHILD_WITHOUT_WITH = """
import os
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    pool = Pool(2, backend="process", start_method={method!r})
    futures = [pool.submit(jobs.announce_and_sleep, 120) for _ in range(4)]
    os.write(1, b"WAITING\\n")  # one write, so that no worker line splits it
    futures[0].result()
    print("NOT REACHED", flush=True)
"""


@pytest.mark.parametrize("script", [CHILD, CHILD_WITHOUT_WITH], ids=["with", "without-with"])
@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_stops_the_pool_and_the_interpreter_exits(method: str, script: str) -> None:
    with subreaper():
        child = Child(script.format(tests=TESTS, method=method))
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
        child = Child(CHILD.format(tests=TESTS, method=method))
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
