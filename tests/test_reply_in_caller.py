"""A thread blocked in ``result()`` reads its job's reply itself (process backend).

That saves the hop through the dispatcher thread on every submit -> result round trip. These
tests pin down that it really happens, and that every way a running job can end still ends it
while a thread waits that way: a reply, an exception, a timeout of ``result()`` itself, a job
time limit, ``Pool.kill``, a crash, an interrupt, and callbacks that use the pool again.

Ordering is forced, not guessed: the job waits at a ``StartGate``, and the test's action runs
when the waiting thread starts to wait for the reply (``on_first_wait`` wraps that step).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, Callable

import pytest

import jobs
from conftest import PROCESS, WAIT, join_or_fail, wait_until, within
from jobpool import JobKilledError, JobTimeoutError, WorkerCrashedError, _platform
from jobpool._process import _lending, _workers
from jobpool._process._lease import Lease
from jobpool._process._watch import FdWatch
from jobs import StartGate


@pytest.fixture
def on_first_wait(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], Any]], None]]:
    """Queue an action to run when a thread next starts waiting for a reply itself."""
    actions: list[Callable[[], Any]] = []
    original = Lease.wait

    def wait_for_reply(self: Lease, timeout: Any, spin: float = 0.0) -> bool:
        while actions:
            actions.pop(0)()
        return original(self, timeout, spin)

    monkeypatch.setattr(Lease, "wait", wait_for_reply)
    yield actions.append
    assert not actions, "no thread waited for its reply itself"


def running(pool: Any, gate: StartGate, job: Callable[..., Any], tag: str, *args: Any) -> Any:
    """Submit ``job(gate.address, tag, *args)`` and return its future once it runs in a worker."""
    future = pool.submit(job, gate.address, tag, *args)
    gate.wait_for(tag)
    return future


def _thread_names(future: Any) -> list[str]:
    names: list[str] = []
    future.add_done_callback(lambda _: names.append(threading.current_thread().name))
    return names


@pytest.mark.parametrize("backend", PROCESS)
def test_result_reads_the_reply_in_the_waiting_thread(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_job, "a", 42)
    settled_in = _thread_names(future)
    on_first_wait(lambda: gate.release("a"))
    assert future.result(timeout=WAIT) == 42
    assert settled_in == [threading.current_thread().name]


@pytest.mark.parametrize("backend", PROCESS)
def test_exception_reads_the_reply_in_the_waiting_thread(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_then_raise, "e", "boom")
    settled_in = _thread_names(future)
    on_first_wait(lambda: gate.release("e"))
    error = future.exception(timeout=WAIT)
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert settled_in == [threading.current_thread().name]


@pytest.mark.parametrize("backend", PROCESS)
def test_result_timeout_gives_the_pipe_back(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_job, "t", 7)
    waited = []
    on_first_wait(lambda: waited.append(True))
    with pytest.raises(FuturesTimeout):
        future.result(timeout=0.05)  # the job is held at the gate: this cannot succeed
    assert waited
    settled_in = _thread_names(future)
    gate.release("t")
    done, _ = wait([future], timeout=WAIT)  # nobody calls result(): the dispatcher reads it
    assert future in done and future.result() == 7
    assert settled_in == ["jobpool-dispatcher"]
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


@pytest.mark.parametrize("backend", PROCESS)
def test_interrupted_wait_gives_the_pipe_back(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_job, "i", 5)

    def interrupt() -> None:
        raise KeyboardInterrupt

    on_first_wait(interrupt)
    with pytest.raises(KeyboardInterrupt):
        future.result(timeout=WAIT)
    gate.release("i")
    done, _ = wait([future], timeout=WAIT)
    assert future in done and future.result() == 5
    assert pool.submit(jobs.square, 4).result(timeout=WAIT) == 16


@pytest.mark.parametrize("backend", PROCESS)
def test_kill_while_a_thread_waits_for_the_reply(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_job, "k")
    killer = threading.Thread(target=pool.kill, args=(future,))
    on_first_wait(killer.start)
    with pytest.raises(JobKilledError):
        future.result(timeout=WAIT)
    join_or_fail(killer)
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9
    assert pool.stats().worker_restarts == 1


@pytest.mark.parametrize("backend", PROCESS)
def test_crash_while_a_thread_waits_for_the_reply(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_then_exit, "c", 9)
    on_first_wait(lambda: gate.release("c"))
    with pytest.raises(WorkerCrashedError) as caught:
        future.result(timeout=WAIT)
    assert caught.value.exitcode == 9
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


@pytest.mark.parametrize("backend", PROCESS)
def test_job_time_limit_while_a_thread_waits_for_the_reply(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    # never released: only the time limit ends it
    future = running(pool.options(timeout=0.2), gate, jobs.gate_job, "slow")
    waited = []
    on_first_wait(lambda: waited.append(True))
    with pytest.raises(JobTimeoutError):
        future.result(timeout=WAIT)
    assert waited
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


@pytest.mark.parametrize("backend", PROCESS)
def test_callbacks_may_use_the_pool_from_the_waiting_thread(
    make_pool: Any, backend: str, gate: StartGate, on_first_wait: Any
) -> None:
    pool = make_pool(backend)
    future = running(pool, gate, jobs.gate_job, "cb", 5)
    inner: list[int] = []
    future.add_done_callback(
        lambda f: inner.append(pool.submit(jobs.square, f.result()).result(timeout=WAIT))
    )
    on_first_wait(lambda: gate.release("cb"))
    assert future.result(timeout=WAIT) == 5
    assert inner == [25]


@pytest.mark.parametrize("backend", PROCESS)
def test_many_threads_waiting_for_their_own_replies(
    make_pool: Any, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[str] = []  # the thread of each wait for a reply read in the waiting thread
    original = Lease.wait

    def wait_for_reply(self: Lease, timeout: Any, spin: float = 0.0) -> bool:
        readers.append(threading.current_thread().name)
        return original(self, timeout, spin)

    monkeypatch.setattr(Lease, "wait", wait_for_reply)
    pool = make_pool(backend)
    rounds = 150

    def client(k: int) -> list[int]:
        values = []
        for i in range(rounds):
            if i % 7 == 0:
                error = pool.submit(jobs.raise_value_error, f"{k}-{i}").exception(timeout=WAIT)
                assert str(error) == f"{k}-{i}"
            else:
                values.append(pool.submit(jobs.add, k, i).result(timeout=WAIT))
        return values

    with ThreadPoolExecutor(4, thread_name_prefix="client") as clients:
        results = list(clients.map(client, range(4), timeout=WAIT))
    for k, values in enumerate(results):
        assert values == [k + i for i in range(rounds) if i % 7]
    stats = pool.stats()
    assert stats.done + stats.failed == 4 * rounds and stats.running == 0
    # Replies were read by the threads waiting for them (each of them lends the pipe in about a
    # fifth of its rounds: the others find a job queued or their reply in already).
    assert len(set(readers)) >= 2 and all(r.startswith("client") for r in readers), readers


# --- looking for a short job's reply before sleeping (Lease.wait's spin) -----------------------

# Longer than any test: a thread that looked for its reply this long would fail the test's
# deadline instead of finding it.
ENDLESS = 10 * WAIT


@pytest.fixture
def spins(monkeypatch: pytest.MonkeyPatch, on_first_wait: Any) -> list[float]:
    """Every ``spin`` a waiting thread was given, in order; every job counts as short.
    (After ``on_first_wait``, whose actions run first.)"""
    monkeypatch.setattr(_lending, "SPIN_SECONDS", ENDLESS)
    monkeypatch.setattr(_lending, "SHORT_JOB_SECONDS", ENDLESS)
    given: list[float] = []
    original = Lease.wait

    def wait_for_reply(self: Lease, timeout: Any, spin: float = 0.0) -> bool:
        given.append(spin)
        return original(self, timeout, spin)

    monkeypatch.setattr(Lease, "wait", wait_for_reply)
    return given


def cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pools made from now on see ``n`` CPUs, whatever this machine has."""
    monkeypatch.setattr(_workers, "cpus_allowed", lambda: n)


def looks_when_free(pool: Any, gate: StartGate, spins: list[float], workers: int) -> None:
    """Round trips until a thread looked for its reply (a worker's first job has no time of its
    own yet, and a reply the dispatcher read first needs no waiting), once every worker is
    ready (a starting one counts as taking a CPU)."""
    held = [running(pool, gate, jobs.gate_job, f"ready-{n}", n) for n in range(workers)]
    for n in range(workers):
        gate.release(f"ready-{n}")
    assert [future.result(timeout=WAIT) for future in held] == list(range(workers))
    for i in range(100):
        assert pool.submit(jobs.square, i).result(timeout=WAIT) == i * i
        if ENDLESS in spins:
            return
    pytest.fail(f"no thread looked for its reply in 100 round trips: {spins}")


@pytest.mark.parametrize("backend", PROCESS)
def test_a_short_jobs_reply_is_looked_for_before_sleeping(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus(monkeypatch, 2)
    pool = make_pool(backend, workers=1)
    looks_when_free(pool, gate, spins, 1)
    for i in range(20):  # each found as soon as it is there: none waits for ENDLESS
        assert within(pool.submit(jobs.square, i).result, timeout=WAIT) == i * i


@pytest.mark.parametrize("backend", PROCESS)
def test_on_one_cpu_a_waiting_thread_sleeps_at_once(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    on_first_wait: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker needs that CPU to reply: looking would only keep it from running."""
    cpus(monkeypatch, 1)
    pool = make_pool(backend, workers=1)
    for i in range(20):
        assert pool.submit(jobs.square, i).result(timeout=WAIT) == i * i
    future = running(pool, gate, jobs.gate_job, "one", 1)  # so that it surely waits
    on_first_wait(lambda: gate.release("one"))
    assert future.result(timeout=WAIT) == 1
    assert spins and set(spins) == {0.0}, spins


@pytest.mark.parametrize("backend", PROCESS)
def test_no_looking_while_the_pools_workers_take_every_cpu(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    on_first_wait: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus(monkeypatch, 2)
    pool = make_pool(backend, workers=2)
    looks_when_free(pool, gate, spins, 2)
    busy = running(pool, gate, jobs.gate_job, "busy", 1)
    mine = running(pool, gate, jobs.gate_job, "mine", 2)  # both workers hold a job now
    spins.clear()
    on_first_wait(lambda: gate.release("mine"))
    assert mine.result(timeout=WAIT) == 2
    assert spins and spins[0] == 0.0, spins
    gate.release("busy")
    assert busy.result(timeout=WAIT) == 1


@pytest.mark.parametrize("backend", PROCESS)
def test_a_worker_whose_jobs_got_long_is_not_looked_for(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    on_first_wait: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus(monkeypatch, 2)
    monkeypatch.setattr(_lending, "SHORT_JOB_SECONDS", 0.05)
    pool = make_pool(backend, workers=1)
    assert pool.submit(jobs.sleep_for, 0.2).result(timeout=WAIT) == 0.2  # its time: >= 0.2 s
    future = running(pool, gate, jobs.gate_job, "next", 5)
    spins.clear()
    on_first_wait(lambda: gate.release("next"))
    assert future.result(timeout=WAIT) == 5
    assert spins == [0.0]


@pytest.mark.parametrize("backend", PROCESS)
def test_looking_ends_with_the_callers_timeout(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus(monkeypatch, 2)
    pool = make_pool(backend, workers=1)
    looks_when_free(pool, gate, spins, 1)
    future = running(pool, gate, jobs.gate_job, "held", 3)
    spins.clear()
    with pytest.raises(FuturesTimeout):  # not after ENDLESS: within's deadline would fail
        within(future.result, timeout=0.05, seconds=WAIT)
    assert spins and spins[0] == ENDLESS
    gate.release("held")
    assert future.result(timeout=WAIT) == 3


@pytest.mark.parametrize("backend", PROCESS)
def test_a_crash_ends_the_looking(
    make_pool: Any,
    backend: str,
    gate: StartGate,
    spins: list[float],
    on_first_wait: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that dies while the thread looks ends the looking (its pipe's end of file)."""
    cpus(monkeypatch, 2)
    pool = make_pool(backend, workers=1)
    looks_when_free(pool, gate, spins, 1)
    future = running(pool, gate, jobs.gate_then_exit, "crash", 9)
    spins.clear()
    on_first_wait(lambda: gate.release("crash"))
    with pytest.raises(WorkerCrashedError) as caught:  # not after ENDLESS
        within(future.result, seconds=WAIT)
    assert caught.value.exitcode == 9
    assert spins and spins[0] == ENDLESS
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


def test_a_lease_looks_then_sleeps_until_called_off() -> None:
    reader, writer = os.pipe()
    lease = Lease(reader)
    try:
        os.write(writer, b"x")
        assert lease.wait(None, ENDLESS)  # there already: found at the first look
        os.read(reader, 1)
        assert not within(lease.wait, 0.01, ENDLESS)  # nothing comes: the timeout ends it
        found: list[bool] = []
        waiting = threading.Thread(target=lambda: found.append(lease.wait(None, ENDLESS)))
        waiting.start()
        lease.call_off()  # while it looks, or before: either way it returns
        join_or_fail(waiting)
        assert found == [False]
    finally:
        lease.close()
        os.close(reader)
        os.close(writer)


@pytest.fixture(params=["epoll", "selectors"])
def watch(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FdWatch[Any]]:
    if request.param == "selectors":
        monkeypatch.setattr(_platform, "EPOLL", False)
    elif not _platform.EPOLL:
        pytest.skip("linux_only(epoll): no epoll here, or turned off (JOBPOOL_PORTABLE)")
    fd_watch: FdWatch[Any] = FdWatch()
    yield fd_watch
    fd_watch.close()


def test_fd_watch_pause_resume_and_remove(watch: FdWatch[Any]) -> None:
    ours, theirs = socket.socketpair()
    quiet_r, quiet_w = os.pipe()
    try:
        callback = ("pipe", "ours")
        watch.add(ours.fileno(), callback)
        watch.add(quiet_r, None)
        assert watch.wait(0) == []
        theirs.sendall(b"x")
        assert watch.wait(WAIT) == [callback]
        assert watch.pause(ours.fileno())
        theirs.close()  # even a hang-up is not reported while paused
        assert watch.wait(0) == []
        watch.resume(ours.fileno())
        assert watch.wait(WAIT) == [callback]
        watch.remove(ours.fileno(), ("pipe", "someone else's"))  # not its registration
        assert watch.pause(ours.fileno())
        watch.resume(ours.fileno())
        watch.remove(ours.fileno(), callback)
        watch.remove(ours.fileno(), callback)  # removing twice is quiet
        assert not watch.pause(ours.fileno())
        assert watch.wait(0) == []
        os.write(quiet_w, b"x")
        assert watch.wait(WAIT) == [None]
    finally:
        ours.close()
        theirs.close()
        os.close(quiet_r)
        os.close(quiet_w)


def test_a_late_removal_for_a_closed_fd_keeps_the_new_owner_of_its_number(
    watch: FdWatch[Any],
) -> None:
    """fd numbers are reused: a worker's pipe closed, the next worker's pipe got the same number,
    and an event for the old worker still handled in the same batch asks to remove "its" fd.
    The new worker's registration stays, and its events are still seen (in the portable CI
    run, a new worker's exit was never seen this way and shutdown waited forever)."""
    old_r, old_w = os.pipe()
    watch.add(old_r, ("exit", "old worker"))
    os.close(old_r)
    watch.remove(old_r, ("exit", "old worker"))  # as the old worker's exit removes it
    new_r, new_w = os.pipe()
    try:
        while new_r != old_r:  # another thread took the number meanwhile: make it ours
            os.dup2(new_r, old_r)
            os.close(new_r)
            new_r = old_r
        watch.add(new_r, ("exit", "new worker"))
        watch.remove(old_r, ("output", "old worker"))  # the stale one, same number
        os.close(new_w)  # the new worker exits
        new_w = -1
        assert watch.wait(WAIT) == [("exit", "new worker")]
    finally:
        os.close(old_w)
        os.close(new_r)
        if new_w >= 0:
            os.close(new_w)


def test_fd_watch_resumed_while_another_thread_sleeps_wakes_it(watch: FdWatch[Any]) -> None:
    """A caller thread gives a borrowed pipe back while the dispatcher sleeps, and the worker
    then replies: the sleep must end (poll and select watch only what was registered when it
    began, so the watch wakes itself on every change)."""
    read_end, write_end = os.pipe()
    woken: list[Any] = []
    try:
        watch.add(read_end, "reply")
        assert watch.pause(read_end)
        started = threading.Event()

        def sleep() -> None:
            started.set()
            for _ in range(2):  # a sleep may end for the change alone, before the reply
                woken.extend(watch.wait(None))
                if woken:
                    return

        sleeper = threading.Thread(target=sleep, name="fd-watch sleeper", daemon=True)
        sleeper.start()
        started.wait(WAIT)
        wait_until(lambda: _in_select(sleeper), "the sleeper to sleep in the watch")
        watch.resume(read_end)
        os.write(write_end, b"x")
        join_or_fail(sleeper)
        assert woken == ["reply"]
    finally:
        os.close(read_end)
        os.close(write_end)


def _in_select(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside FdWatch.wait's system call (its innermost frame's caller)."""
    import sys

    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("_watch.py"):
            return True
        frame = frame.f_back
    return False
