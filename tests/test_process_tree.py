"""Stopping a job stops every program it started (issue 19): children, grandchildren, and the
ones that detach themselves, whether the job runs out of time, is killed, its pool is terminated,
Ctrl-C ends the program, or the program that owns the pool is killed outright.

The programs are ``sleep`` processes started through ``sh``. Each carries a marker in its
environment (``proctree.MarkedPrograms``), so the test finds every one in /proc, even those whose
pid it never learnt. The test is a child subreaper while it runs, so whatever the programs leave
comes back to it; on the way out it kills every marked program still running and reaps them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import jobs
from conftest import START_METHODS, WAIT
from jobpool import JobKilledError, JobTimeoutError, Pool, _platform
from proctree import (
    Child,
    MarkedPrograms,
    alive,
    assert_no_zombies,
    descendants,
    marked_programs,
    reap,
    wait_exited,
)

# Spawn repeats forkserver's scenarios at several times the cost: run by CI (see conftest.py).
METHODS = [pytest.param(m, marks=[pytest.mark.slow] if m == "spawn" else []) for m in START_METHODS]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc; Linux is the tested platform"
)

TESTS = os.path.dirname(os.path.abspath(jobs.__file__))
# A child, a child that started a grandchild, an orphan (its parent gone) in the worker's group,
# a child in a session of its own, and a program detached by a double fork into a session of
# its own (re-parented to the worker).
EVERY_SHAPE = ("sleep", "grandchild", "orphan", "setsid", "double-fork")
# Without the /proc walk and the subreaper (JOBPOOL_PORTABLE, macOS) a job is stopped through
# its worker's process group: what left the group escapes (docs/usage/programs.md).
TREE_WALK = _platform.PROC and _platform.SUBREAPER
IN_GROUP = ("sleep", "grandchild", "orphan")
COVERED = EVERY_SHAPE if TREE_WALK else IN_GROUP
TIMEOUT = 1.5  # seconds: time enough for a job to start its programs and report them


@pytest.fixture
def programs() -> Iterator[MarkedPrograms]:
    with marked_programs() as marked:
        yield marked


def reported(gate: jobs.StartGate) -> set[int]:
    """The pids of the programs the next job at the gate started."""
    tag, _ = gate.wait(WAIT)
    return {int(pid) for pid in tag.split(":", 1)[1].split(",")}


def assert_none_running(programs: MarkedPrograms) -> None:
    """No marked program runs once the job's future failed (see :func:`assert_all_gone`)."""
    assert_all_gone(programs, set())


def assert_all_gone(programs: MarkedPrograms, pids: set[int]) -> None:
    """Checked right after the future failed: with the tree walk, nothing may still be dying.

    Without it, one ``SIGKILL`` to the worker's group reached every program before the worker
    died, so none runs any more code; the kernel may still be removing one as the future fails
    (docs/usage/programs.md): they must be gone by themselves, within the deadline."""
    if not TREE_WALK:
        wait_exited(pids | programs.running(), WAIT)
    assert not {pid for pid in pids if alive(pid)}, "a program the job started still runs"
    assert not programs.running(), "a process the job's programs started still runs"


def start_at_gate(pool: Any, gate: jobs.StartGate, programs: MarkedPrograms, **kw: Any) -> Any:
    shapes = kw.pop("shapes", COVERED)
    return pool.submit(jobs.programs_at_gate, gate.address, "job", shapes, programs.env, **kw)


# --- the pool stops a job ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_timed_out_job_leaves_no_program_running(method: str, programs: MarkedPrograms) -> None:
    with Pool(1, backend="process", start_method=method) as pool, jobs.StartGate() as gate:
        future = start_at_gate(pool.options(timeout=TIMEOUT), gate, programs)
        pids = reported(gate)
        assert isinstance(future.exception(timeout=WAIT), JobTimeoutError)
        assert_all_gone(programs, pids)
        assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_job_leaves_no_program_running(method: str, programs: MarkedPrograms) -> None:
    with Pool(1, backend="process", start_method=method) as pool, jobs.StartGate() as gate:
        future = start_at_gate(pool, gate, programs)
        pids = reported(gate)
        # They run, and the marker finds them.
        assert programs.wait_running(pids), (pids, programs.running())
        assert pool.kill(future) is True  # returns once the future has failed
        assert isinstance(future.exception(timeout=0), JobKilledError)
        assert_all_gone(programs, pids)


def test_a_program_that_keeps_forking_cannot_outrun_the_kill(programs: MarkedPrograms) -> None:
    """The job's program starts programs without end, in its group and detached ones."""
    with Pool(1, backend="process") as pool, jobs.StartGate() as gate:
        shapes = ("forker",) if TREE_WALK else ("group-forker",)
        future = start_at_gate(pool, gate, programs, shapes=shapes)
        reported(gate)
        assert len(programs.running()) > 10  # the loop runs and keeps starting more
        assert pool.kill(future) is True
        assert_none_running(programs)


def test_a_job_that_keeps_starting_programs_cannot_outrun_the_kill(
    programs: MarkedPrograms,
) -> None:
    """The job itself starts programs without end: its worker is frozen before the kill."""
    with Pool(1, backend="process") as pool, jobs.StartGate() as gate:
        future = pool.submit(jobs.keep_starting_programs, gate.address, programs.env, TREE_WALK)
        gate.wait(WAIT)
        assert pool.kill(future) is True
        assert_none_running(programs)


def test_terminate_stops_the_programs_of_every_worker(programs: MarkedPrograms) -> None:
    """Including what an earlier job on a worker left running: terminate stops by force."""
    with jobs.StartGate() as gate:
        pool = Pool(2, backend="process")
        try:
            left = pool.submit(jobs.start_programs, ("sleep",), programs.env).result(timeout=WAIT)
            running = [start_at_gate(pool, gate, programs) for _ in range(2)]
            pids = reported(gate) | reported(gate) | set(left)
            assert programs.wait_running(pids), (pids, programs.running())
        finally:
            pool.terminate()  # returns once the workers have exited
    assert all(isinstance(f.exception(timeout=0), JobKilledError) for f in running)
    assert_all_gone(programs, pids)


@pytest.mark.parametrize("method", METHODS)
def test_programs_left_by_a_finished_job_survive_recycling_and_shutdown(
    method: str, programs: MarkedPrograms
) -> None:
    """A job may start a server on purpose: a worker that ends normally leaves it running."""
    with Pool(1, backend="process", start_method=method, max_jobs_per_worker=1) as pool:
        left = set(pool.submit(jobs.start_programs, EVERY_SHAPE, programs.env).result(WAIT))
        assert pool.submit(jobs.square, 4).result(timeout=WAIT) == 16  # on a new worker
        assert pool.stats().worker_restarts >= 1
    # After recycling, and after shutdown().
    assert programs.wait_running(left), (left, programs.running())


def test_a_timed_out_thread_job_leaves_its_program_running(programs: MarkedPrograms) -> None:
    """A thread cannot be stopped: its program runs on (see docs/usage/timeouts.md)."""
    with Pool(1, job_timeout=TIMEOUT) as pool, jobs.StartGate() as gate:
        future = start_at_gate(pool, gate, programs, shapes=("sleep",))
        pids = reported(gate)
        assert isinstance(future.exception(timeout=WAIT), JobTimeoutError)
        assert programs.wait_running(pids), (pids, programs.running())
        programs.kill_all()  # the thread, released by its gate, returns
        gate.release_all()


@pytest.mark.skipif(TREE_WALK, reason="what the process group alone leaves: without /proc")
def test_without_the_tree_walk_a_program_in_a_session_of_its_own_escapes(
    programs: MarkedPrograms,
) -> None:
    """What docs/usage/programs.md says escapes where there is no /proc walk: a program that
    started a session of its own outlives the stopped job; the rest of the group does not."""
    with Pool(1, backend="process") as pool, jobs.StartGate() as gate:
        future = start_at_gate(pool, gate, programs, shapes=(*IN_GROUP, "setsid"))
        pids = reported(gate)
        assert programs.wait_running(pids), (pids, programs.running())
        assert pool.kill(future) is True
        escaped = programs.running()
        assert len(escaped) == 1 and escaped <= pids, escaped
        programs.kill_all()


# --- the program that owns the pool ends ------------------------------------------------------

CHILD = """
import os
import sys
sys.path.insert(0, {tests!r})
import jobs
from jobpool import Pool

if __name__ == "__main__":
    with Pool(2, backend="process", start_method={method!r}) as pool:
        futures = [
            pool.submit(jobs.programs_then_sleep, {shapes!r}, {env!r}) for _ in range(2)
        ]
        os.write(1, b"WAITING\\n")  # one write, so that no worker line splits it
        futures[0].result()
    print("NOT REACHED", flush=True)
"""

# The same, but a worker cannot start the fresh interpreter that stops its tree from outside when
# its parent dies: it stops its tree itself (forked workers inherit the patch).
CHILD_WITHOUT_HELPER = (
    """
import jobpool._process._stopping as stopping
stopping._stop_from_outside = lambda: False
"""
    + CHILD
)


def run_child(programs: MarkedPrograms, method: str, script: str = CHILD) -> Child:
    env = programs.env
    return Child(
        script.format(tests=TESTS, method=method, shapes=COVERED, env=env), new_session=True
    )


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_stops_every_program(method: str, programs: MarkedPrograms) -> None:
    child = run_child(programs, method)
    family: set[int] = set()
    try:
        pids = child.read_pids("PROGRAMS", 2)
        family = descendants(child.proc.pid)
        assert programs.wait_running(pids), (pids, programs.running())
        os.killpg(child.proc.pid, signal.SIGINT)  # as a terminal does: to its foreground group
        code = child.finish()  # the pool is terminated, then the interpreter exits
        assert_all_gone(programs, pids)
    finally:
        family |= descendants(child.proc.pid)
        child.kill()
        programs.kill_all()  # if the test failed: do not wait for them below
        reap(family)
    assert code in (-signal.SIGINT, 1, 130), (code, child.stderr)
    assert "KeyboardInterrupt" in child.stderr and "NOT REACHED" not in child.stderr


@pytest.mark.parametrize(
    ("method", "script"),
    [*((m, CHILD) for m in START_METHODS), ("fork", CHILD_WITHOUT_HELPER)],
    ids=[*START_METHODS, "fork-no-helper"],
)
def test_a_killed_parent_takes_every_program_with_it(
    method: str, script: str, programs: MarkedPrograms
) -> None:
    before = descendants(os.getpid())
    child = run_child(programs, method, script)
    family: set[int] = set()
    try:
        pids = child.read_pids("PROGRAMS", 2)
        family = descendants(child.proc.pid)  # workers, programs, fork server, tracker
        assert programs.wait_running(pids), (pids, programs.running())
        child.proc.kill()  # SIGKILL: nothing runs in the parent
        assert child.finish() == -signal.SIGKILL
        still = wait_exited(family, 5.0)
        assert not still, f"{still} outlived the parent by 5 s"
        assert not programs.running()
    finally:
        child.kill()
        programs.kill_all()  # if the test failed: do not wait for them below
        # The interpreters that stopped the workers' trees from outside were adopted by us.
        family |= descendants(os.getpid()) - before
        still = wait_exited(family, WAIT)
        reap(family)
    assert not still
    assert_no_zombies()


# --- a worker is a child subreaper: what it reaps --------------------------------------------


@pytest.mark.linux_only("subreaper", "proc")
@pytest.mark.parametrize("method", METHODS)
def test_a_worker_reaps_only_the_zombies_that_cannot_be_its_own_children(method: str) -> None:
    with Pool(1, backend="process", start_method=method) as pool:
        report = pool.submit(jobs.reap_what_was_adopted).result(timeout=WAIT)
    assert report["from a session"] is None  # reaped: it was forked in another session
    assert report["from a shell"].state == "Z"  # left: it could have been a child of the job
    # The job's own children keep their exit status for it, in its session or their own.
    assert (report["own"], report["own session"]) == (7, 9)


@pytest.mark.parametrize("method", METHODS)
def test_workers_lead_their_own_group_and_never_read_the_terminal(method: str) -> None:
    """Out of the terminal's foreground group, a program reading the terminal would be stopped
    (SIGTTIN): workers get /dev/null for a terminal on their standard input."""
    script = (
        f"import sys; sys.path.insert(0, {TESTS!r}); import jobs; from jobpool import Pool\n"
        "if __name__ == '__main__':\n"
        f"    with Pool(1, backend='process', start_method={method!r}) as pool:\n"
        "        print(sys.stdin.isatty(), *pool.submit(jobs.worker_placement).result(60))\n"
    )
    terminal, tty = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], stdin=tty, capture_output=True, text=True, timeout=WAIT
        )
    finally:
        os.close(tty)
        os.close(terminal)
    assert done.stdout.split() == ["True", "True", "False"], done.stderr
