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

from conftest import WAIT
from proctree import (
    Child,
    assert_no_zombies,
    descendants,
    kill_and_reap,
    reap,
    subreaper,
    wait_exited,
)

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


# The parent forks a child that outlives it (the user's own fork): that child inherits a copy of
# everything the parent held at the fork. Workers are told of their parent's death only by the
# death-notice pipe here: pidfds are turned off and the getppid() backstop is made hourly.
CHILD_WITH_A_FORK = """
import os
import sys
import time
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool
from jobpool._process import _in_worker

if __name__ == "__main__":
    _in_worker.PPID_POLL_SECONDS = 3600.0  # inherited by the fork-started workers
    pool = Pool(2, backend="process", start_method="fork")
    futures = [pool.submit(jobs.announce_and_sleep, 120) for _ in range(2)]
    read_end, write_end = os.pipe()
    forked = os.fork()
    if forked == 0:  # holds whatever the parent's fork passed on, until its stdin closes
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    # One write per line: the workers write theirs at any moment (print may write in parts).
    os.write(1, f"FORKED {{forked}}\\n".encode())
    os.write(1, b"WAITING\\n")
    futures[0].result()
"""


def test_workers_notice_a_killed_parent_without_pidfd_while_a_fork_of_it_lives() -> None:
    """The death notice is a pipe end only the parent holds: a child forked from the parent
    closes its copy at once, so it cannot hide the parent's death (the multiprocessing
    sentinel's weakness under the fork start method)."""
    env = {**os.environ, "JOBPOOL_DISABLE": "pidfd", "JOBPOOL_PORTABLE": ""}
    with subreaper():
        child = Child(CHILD_WITH_A_FORK.format(tests=TESTS), env=env)
        family: set[int] = set()
        try:
            workers, forked = set(), set()
            while len(workers) < 2 or not forked:
                line = child.lines.get(timeout=WAIT)
                assert line is not None, f"child ended early; stderr:\n{child.stderr}"
                tag, _, pid = line.partition(" ")
                {"WORKER": workers, "FORKED": forked}.get(tag, set()).update({int(pid or 0)})
            family = descendants(child.proc.pid)
            assert workers | forked <= family
            child.proc.kill()
            assert child.finish() == -signal.SIGKILL
            still = wait_exited(workers, WAIT)
            assert not still, f"workers {still} did not notice their parent's death"
            assert not wait_exited(forked, 0), "the parent's own fork is still running"
        finally:
            family |= descendants(child.proc.pid)
            child.kill()
            leftovers = kill_and_reap(family)
        assert not leftovers, f"processes still there: {leftovers}"
        assert_no_zombies()


CHILD_LOSING_ITS_FORK_SERVER = """
import os
import signal
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool
from jobpool._process import _fork_requests

if __name__ == "__main__":
    with Pool(1, backend="process", start_method="forkserver") as pool, jobs.StartGate() as gate:
        future = pool.submit(jobs.gate_job, gate.address, "held", 7)
        worker = gate.wait_for("held")
        print("worker", worker, flush=True)  # now the test's to reap, once its fork server died
        print("WAITING", flush=True)
        os.kill(_fork_requests.server_pid(), signal.SIGKILL)
        gate.release("held")
        print("result", future.result(60), flush=True)
        print("same worker", pool.submit(os.getpid).result(60) == worker, flush=True)
    print("done", flush=True)
"""


def test_a_dead_fork_server_does_not_make_its_workers_look_dead() -> None:
    """Without pidfds a worker's exit is its own pipe's end of file, not multiprocessing's
    sentinel, which under forkserver reports every worker as exited (code 255) once the fork
    server is gone (killed, or dead for want of a descriptor while starting a worker)."""
    env = {**os.environ, "JOBPOOL_DISABLE": "pidfd", "JOBPOOL_PORTABLE": ""}
    with subreaper():
        child = Child(CHILD_LOSING_ITS_FORK_SERVER.format(tests=TESTS), env=env)
        family: set[int] = set()
        try:
            worker = child.read_pids("worker", 1)
            family = descendants(child.proc.pid) | worker
            lines = [child.lines.get(timeout=WAIT) for _ in range(3)]
            assert child.finish() == 0, child.stderr
        finally:
            family |= descendants(child.proc.pid)
            child.kill()
            leftovers = reap(family)
        assert lines == ["result 7", "same worker True", "done"], child.stderr
        assert not leftovers, f"processes still there: {leftovers}"
        assert_no_zombies()
