"""jobpool.multiprocessing: multiprocessing.Pool's API on jobpool, and where it does better.

Every method runs on threads and on processes under each start method. Jobs that must stay
running while the test looks are held at a ``jobs.StartGate`` (they report that they started and
wait to be released); nothing waits on a sleep guess.
"""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any, Callable

import pytest

import jobpool.multiprocessing as jmp
import jobs
from conftest import (
    LOCAL_BACKENDS,
    PROCESS_BACKENDS,
    START_METHODS,
    WAIT,
    assert_no_leftover_processes,
    join_or_fail,
    wait_blocked_in,
    within,
)
from jobpool import (
    InitializerError,
    JobKilledError,
    JobTimeoutError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
)
from jobs import StartGate

MakeMpPool = Callable[..., jmp.Pool]  # the make_mp fixture


def new_pool(backend: str, processes: int = 2, **kwargs: Any) -> jmp.Pool:
    if backend == "thread":
        return jmp.ThreadPool(processes, **kwargs)
    return jmp.Pool(processes, context=backend.split("-", 1)[1], **kwargs)


@pytest.fixture
def make_mp() -> Iterator[MakeMpPool]:
    pools: list[jmp.Pool] = []

    def make(backend: str, processes: int = 2, **kwargs: Any) -> jmp.Pool:
        pool = new_pool(backend, processes, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
        within(pool.join)


def outcomes(iterator: Iterator[Any]) -> list[Any]:
    """Every result of an imap iterator, with the type of the exception an item raised."""
    out: list[Any] = []
    while True:
        try:
            out.append(next(iterator))
        except StopIteration:
            return out
        except Exception as exc:
            out.append(type(exc))


# --- the stdlib's API -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_every_method_returns_what_the_stdlib_returns(make_mp: MakeMpPool, backend: str) -> None:
    pool = make_mp(backend)
    squares = [i * i for i in range(10)]
    assert within(pool.apply, jobs.add, (2, 3)) == 5
    assert within(pool.apply, jobs.echo_kwargs, [1], {"k": 2}) == ((1,), {"k": 2})
    result = pool.apply_async(jobs.square, (4,))
    assert isinstance(result, jmp.AsyncResult)
    assert result.get(WAIT) == 16
    assert result.ready() and result.successful()
    result.wait(WAIT)
    assert within(pool.map, jobs.square, range(10)) == squares
    assert within(pool.map, jobs.square, iter(range(10)), chunksize=3) == squares
    mapped = pool.map_async(jobs.square, range(10))
    assert isinstance(mapped, jmp.MapResult)
    assert mapped.get(WAIT) == squares and mapped.ready() and mapped.successful()
    assert within(pool.starmap, jobs.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap_async(jobs.add, [(1, 2)], 1).get(WAIT) == [3]
    iterator = pool.imap(jobs.square, range(10))
    assert isinstance(iterator, jmp.IMapIterator)
    assert within(list, iterator) == squares
    assert within(list, pool.imap(jobs.square, range(10), 3)) == squares
    assert within(sorted, pool.imap_unordered(jobs.square, range(10))) == squares
    assert within(sorted, pool.imap_unordered(jobs.square, range(10), chunksize=4)) == squares
    assert (
        within(pool.map, jobs.square, []) == [] and pool.map_async(jobs.square, []).get(WAIT) == []
    )
    assert (
        within(list, pool.imap(jobs.square, []))
        == []
        == within(list, pool.imap_unordered(jobs.square, []))
    )
    with pytest.raises(ValueError, match="still running"):
        within(pool.join)
    pool.close()
    calls: list[Callable[[], object]] = [
        lambda: pool.apply(jobs.square, (1,)),
        lambda: pool.apply_async(jobs.square, (1,)),
        lambda: pool.map(jobs.square, [1]),
        lambda: pool.map_async(jobs.square, [1]),
        lambda: pool.starmap(jobs.add, [(1, 2)]),
        lambda: pool.starmap_async(jobs.add, [(1, 2)]),
        lambda: pool.imap(jobs.square, [1]),
        lambda: pool.imap_unordered(jobs.square, [1]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="Pool not running: it was closed"):
            call()
    within(pool.join)
    assert mapped.get(0) == squares  # results stay readable after the pool is gone


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_with_block_terminates_the_pool(make_mp: MakeMpPool, backend: str) -> None:
    with make_mp(backend) as pool:
        assert within(pool.map, jobs.square, range(3)) == [0, 1, 4]
    assert "state=TERMINATE" in repr(pool)
    with pytest.raises(ValueError, match="terminated"):
        within(pool.apply, jobs.square, (1,))
    with pytest.raises(ValueError), pool:
        pass
    within(pool.join)


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_results_answer_ready_successful_wait_and_get(make_mp: MakeMpPool, backend: str) -> None:
    pool = make_mp(backend)
    with StartGate() as gate:
        held = pool.apply_async(jobs.gate_job, (gate.address, "one", 7))
        gate.wait_for("one")
        assert not held.ready()
        with pytest.raises(ValueError, match="not ready"):
            held.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            held.get(timeout=0.05)
        held.wait(0.05)
        assert not held.ready()
        gate.release("one")
        assert held.get(WAIT) == 7
        assert held.ready() and held.successful()

        mapped = pool.starmap_async(jobs.gate_job, [(gate.address, "a", 1), (gate.address, "b", 2)])
        gate.wait_for("a")
        gate.wait_for("b")
        with pytest.raises(ValueError, match="not ready"):
            mapped.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            mapped.get(timeout=0.05)
        gate.release("a")
        gate.release("b")
        assert mapped.get(WAIT) == [1, 2] and mapped.successful()

    failed = pool.apply_async(jobs.raise_value_error, ("no",))
    failed.wait(WAIT)
    assert failed.ready() and not failed.successful()
    with pytest.raises(ValueError, match="no"):
        failed.get(WAIT)


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_map_runs_every_item_and_raises_the_first_error(
    make_mp: MakeMpPool, backend: str, tmp_path: Any
) -> None:
    pool = make_mp(backend)
    directory = str(tmp_path)

    def mark_or_fail(i: int) -> Any:
        if i in (2, 4):
            raise ValueError(f"item {i}")
        return jobs.mark_run(directory, i, i)

    with pytest.raises(ValueError, match="item 2"):
        within(pool.map, mark_or_fail, range(6), chunksize=1)
    # As in the stdlib, map is over when every item is: the others all ran, once.
    assert sorted(jobs.runs_in(directory)) == ["0", "1", "3", "5"]
    result = pool.map_async(jobs.raise_value_error, ["x"])
    result.wait(WAIT)
    assert not result.successful()


# --- callbacks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_callbacks_run_in_one_thread_in_completion_order_before_get_returns(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    seen: list[tuple[Any, int]] = []

    def record(value: Any) -> None:
        seen.append((value, threading.get_ident()))

    with StartGate() as gate:
        first = pool.apply_async(jobs.gate_job, (gate.address, "first", 1), callback=record)
        second = pool.apply_async(jobs.gate_job, (gate.address, "second", 2), callback=record)
        gate.wait_for("first")
        gate.wait_for("second")
        gate.release("second")
        assert second.get(WAIT) == 2
        assert [value for value, _ in seen] == [2]  # its callback ran before get() returned
        gate.release("first")
        assert first.get(WAIT) == 1
    mapped = pool.map_async(jobs.square, range(4), callback=record)
    assert mapped.get(WAIT) == [0, 1, 4, 9]
    assert [value for value, _ in seen] == [2, 1, [0, 1, 4, 9]]
    threads = {thread for _, thread in seen}
    assert len(threads) == 1 and threading.get_ident() not in threads

    # A result is ready only once its callback has returned.
    in_callback, let_go = threading.Event(), threading.Event()

    def slow(value: Any) -> None:
        in_callback.set()
        let_go.wait(WAIT)

    starts: list[Callable[[], Any]] = [
        lambda: pool.apply_async(jobs.square, (5,), callback=slow),
        lambda: pool.map_async(jobs.square, [5], callback=slow),
    ]
    for start in starts:
        result = start()
        assert in_callback.wait(WAIT)
        assert not result.ready()
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.05)
        let_go.set()
        result.wait(WAIT)
        assert result.successful()
        in_callback.clear()
        let_go.clear()

    errors: list[BaseException] = []
    failed = pool.apply_async(
        jobs.raise_value_error, ("bad",), callback=record, error_callback=errors.append
    )
    with pytest.raises(ValueError, match="bad"):
        failed.get(WAIT)
    failed_map = pool.map_async(jobs.raise_value_error, ["worse"], error_callback=errors.append)
    failed_map.wait(WAIT)
    assert [str(e) for e in errors] == ["bad", "worse"]
    assert len(seen) == 3
    pool.close()
    within(pool.join)
    assert not [t for t in threading.enumerate() if t.name == "jobpool-callbacks"]


@pytest.mark.logs_errors
def test_a_callback_that_raises_is_logged_and_the_result_still_arrives(
    make_mp: MakeMpPool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_mp("thread")

    def fails(value: Any) -> None:
        raise RuntimeError(f"callback got {value}")

    with caplog.at_level(logging.ERROR, logger="jobpool"):
        assert pool.apply_async(jobs.square, (3,), callback=fails).get(WAIT) == 9
    assert "callback got 9" in caplog.text
    after: list[int] = []
    assert pool.apply_async(jobs.square, (4,), callback=after.append).get(WAIT) == 16
    assert after == [16]
    with pytest.raises(TypeError, match="callback must be a callable"):
        pool.apply_async(jobs.square, (1,), callback=42)  # type: ignore[arg-type]


# --- imap -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_imap_reads_its_input_lazily(make_mp: MakeMpPool, backend: str) -> None:
    pool = make_mp(backend)
    read: list[int] = []

    def endless() -> Iterator[int]:
        for i in itertools.count():
            read.append(i)
            yield i

    results = pool.imap(jobs.square, endless(), chunksize=10, buffersize=4)
    assert [results.next(WAIT) for _ in range(100)] == [i * i for i in range(100)]
    # Input is read only in next(), at most the window (4 chunks of 10) past what was taken.
    assert len(read) <= 100 + 4 * 10
    unordered = pool.imap_unordered(jobs.square, itertools.count())  # adaptive chunks
    assert len({unordered.next(WAIT) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
def test_imap_next_timeout_leaves_the_iterator_usable(
    make_mp: MakeMpPool, backend: str, ordered: bool
) -> None:
    pool = make_mp(backend)
    with StartGate() as gate:
        address = gate.address
        imap = pool.imap if ordered else pool.imap_unordered
        results = imap(lambda i: jobs.gate_job(address, i, i * 10), range(2), chunksize=1)
        gate.wait_for(0)
        gate.wait_for(1)
        with pytest.raises(multiprocessing.TimeoutError):
            results.next(timeout=0.05)
        gate.release(0)
        assert results.next(timeout=WAIT) == 0
        with pytest.raises(multiprocessing.TimeoutError):
            results.next(0)
        gate.release(1)
        assert list(results) == [10]


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_imap_item_errors_raise_at_their_turn_and_the_iteration_goes_on(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    expected = [-0.5, -1.0, ZeroDivisionError, 1.0, ZeroDivisionError, 1 / 3]

    def f(x: int) -> float:
        return 1 / (x - 2) if x != 4 else 1 / 0

    for chunksize in (1, 3, None):
        assert within(outcomes, pool.imap(f, range(6), chunksize)) == expected
    got = within(outcomes, pool.imap_unordered(f, range(6), 2))
    assert sorted(map(str, got)) == sorted(map(str, expected))


# --- where the stdlib pool hurts ------------------------------------------------------------------


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_lambdas_closures_and_bound_methods_run_on_processes(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    offset = 10

    def add_offset(x: int) -> int:
        return x + offset

    counter = jobs.Counter(100)
    assert within(pool.apply, lambda: 42) == 42
    assert pool.apply_async(lambda x, y: x * y, (6, 7)).get(WAIT) == 42
    assert within(pool.map, add_offset, range(3)) == [10, 11, 12]
    assert within(pool.starmap, lambda a, b: a - b, [(5, 3)]) == [2]
    assert within(list, pool.imap(counter.add, range(3))) == [100, 101, 102]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_crashed_worker_fails_only_its_own_result(make_mp: MakeMpPool, backend: str) -> None:
    pool = make_mp(backend)
    before = [pool.apply_async(jobs.square, (i,)) for i in range(10)]
    crashed = pool.apply_async(jobs.exit_now, (3,))
    after = [pool.apply_async(jobs.square, (i,)) for i in range(10, 20)]
    with pytest.raises(WorkerCrashedError, match="exited with code 3"):
        crashed.get(WAIT)
    assert not crashed.successful()
    assert [r.get(WAIT) for r in before + after] == [i * i for i in range(20)]

    def exit_at_3(x: int) -> int:
        if x == 3:
            jobs.exit_now(3)
        return x

    with pytest.raises(WorkerCrashedError):
        within(pool.map, exit_at_3, range(6), chunksize=1)
    results = within(outcomes, pool.imap(exit_at_3, range(6), chunksize=1))
    assert results == [0, 1, 2, WorkerCrashedError, 4, 5]
    assert within(pool.map, jobs.square, range(4)) == [0, 1, 4, 9]  # and the pool goes on


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_an_argument_that_cannot_be_pickled_fails_at_the_call(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    with pytest.raises(SerializationError, match=r"args\[0\]\.conn") as info:
        pool.apply_async(jobs.identity, (jobs.Unpicklable(),))
    assert info.value.path == "args[0].conn"
    with pytest.raises(SerializationError, match=r"items\[0\]\.conn"):
        within(pool.map, jobs.identity, [1, 2, jobs.Unpicklable()], chunksize=2)
    with pytest.raises(SerializationError, match=r"items\[0\]\.conn"):
        within(list, pool.imap(jobs.identity, [jobs.Unpicklable()]))
    assert within(pool.map, jobs.square, range(3)) == [0, 1, 4]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_get_reraises_the_workers_exception_with_its_traceback(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    failures: list[Callable[[], object]] = [
        lambda: pool.apply_async(jobs.raise_value_error, ("boom",)).get(WAIT),
        lambda: pool.apply(jobs.raise_value_error, ("boom",)),
        lambda: pool.map(jobs.raise_value_error, ["ok?", "boom"]),
        lambda: next(pool.imap(jobs.raise_value_error, ["boom"])),
    ]
    for fail in failures:
        with pytest.raises(ValueError) as info:
            within(fail)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in raise_value_error" in cause.tb and "raise ValueError(message)" in cause.tb


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_terminate_stops_running_jobs_and_leaves_no_process(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend)
    with StartGate() as gate:
        running = [pool.apply_async(jobs.gate_job, (gate.address, i)) for i in range(2)]
        gate.wait_for(0)
        gate.wait_for(1)
        waiting = [pool.apply_async(jobs.square, (i,)) for i in range(20)]
        mapped = pool.map_async(jobs.square, range(100))
        pool.terminate()
        within(pool.join)
        if backend != "thread":
            assert_no_leftover_processes()
        # Each result fails at once: a running job was killed, a waiting one never ran.
        for result in running:
            with pytest.raises(JobKilledError, match="terminated"):
                result.get(0)
        for result in [*waiting, mapped]:
            with pytest.raises((CancelledError, JobKilledError), match="terminated"):
                result.get(0)
            assert not result.successful()


@pytest.mark.parametrize("backend", ["thread", "process-forkserver"])
def test_results_ended_by_terminate_reach_their_error_callback(
    make_mp: MakeMpPool, backend: str
) -> None:
    pool = make_mp(backend, 1)
    errors: list[BaseException] = []
    with StartGate() as gate:
        running = pool.apply_async(
            jobs.gate_job, (gate.address, "held"), error_callback=errors.append
        )
        gate.wait_for("held")
        waiting = pool.map_async(jobs.square, range(3), error_callback=errors.append)
        pool.terminate()
        within(pool.join)  # the callbacks ran
        assert sorted(type(e).__name__ for e in errors) == ["CancelledError", "JobKilledError"]
        assert not running.successful() and not waiting.successful()


def test_a_failing_initializer_fails_the_results_instead_of_restarting_forever(
    make_mp: MakeMpPool,
) -> None:
    pool = make_mp("process-forkserver", 2, initializer=jobs.fail_initializer)
    with pytest.raises(InitializerError, match="initializer says no"):
        pool.apply_async(jobs.square, (1,)).get(WAIT)
    with pytest.raises(InitializerError):
        within(pool.map, jobs.square, range(3))


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_leaving_a_with_block_kills_the_running_jobs(make_mp: MakeMpPool, backend: str) -> None:
    with StartGate() as gate:
        with make_mp(backend) as pool:
            running = pool.apply_async(jobs.gate_job, (gate.address, "held"))
            gate.wait_for("held")
        within(pool.join)
        assert_no_leftover_processes()
        with pytest.raises(JobKilledError):
            running.get(0)


# --- the constructor ----------------------------------------------------------------------------


def test_constructor_checks_its_arguments_as_the_stdlib_does() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="processes must be at least 1"):
            jmp.Pool(bad)
        with pytest.raises(ValueError, match="processes must be at least 1"):
            jmp.ThreadPool(bad)
    with pytest.raises(TypeError, match="processes must be an int"):
        jmp.Pool("2")  # type: ignore[arg-type]
    for bad_max in (0, -1, 0.5, "12"):
        with pytest.raises(ValueError, match="maxtasksperchild must be a positive int"):
            jmp.Pool(1, maxtasksperchild=bad_max)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initializer must be a callable"):
        jmp.Pool(1, initializer=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context= applies only to backend='process'"):
        jmp.Pool(1, context="fork", backend="thread")
    with pytest.raises(ValueError, match="maxtasksperchild= applies only to backend='process'"):
        jmp.Pool(1, maxtasksperchild=2, backend="dask")
    with pytest.raises(ValueError, match="start_method"):
        jmp.Pool(1, context="no-such-method")
    with jmp.ThreadPool(1) as pool, pytest.raises(TypeError, match="args must be a tuple of"):
        pool.apply_async(jobs.square, 5)  # type: ignore[arg-type]


def test_a_thread_pool_has_its_threads_once_made_as_the_stdlibs() -> None:
    """``multiprocessing.pool.ThreadPool(n)`` starts its n threads when it is made, and its
    initializer runs in each then; jobs that wait on I/O find them there."""
    started = threading.Barrier(4, timeout=WAIT)  # three threads and this test
    pool = jmp.ThreadPool(3, initializer=started.wait)
    try:
        started.wait()  # before any job: every thread ran its initializer
        names = {t.name for t in threading.enumerate() if t.name.startswith("jobpool-thread-")}
        assert len(names) == 3, names
        assert within(pool.map, jobs.square, range(5)) == [0, 1, 4, 9, 16]
    finally:
        pool.terminate()
        within(pool.join)


def test_a_thread_pool_whose_threads_cannot_all_start_raises_and_leaves_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second of three threads cannot start: the constructor raises the error, and the
    thread that did start ends with the pool instead of waiting for jobs forever."""
    real_start = threading.Thread.start
    started: list[threading.Thread] = []

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("jobpool-thread-"):
            if len(started) == 1:
                raise RuntimeError("can't start new thread")
            started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        jmp.ThreadPool(3)
    assert len(started) == 1
    join_or_fail(started[0])


@pytest.mark.parametrize("backend", ["thread", "process-forkserver"])
def test_processes_default_to_the_cpu_count(backend: str) -> None:
    pool = new_pool(backend, None)  # type: ignore[arg-type]
    try:
        cpus = getattr(os, "process_cpu_count", os.cpu_count)()
        assert f"pool_size={cpus}" in repr(pool)
        assert within(pool.map, jobs.square, range(3)) == [0, 1, 4]
    finally:
        pool.terminate()
        within(pool.join)


@pytest.mark.parametrize("method", [m for m in START_METHODS if m != "fork"])
@pytest.mark.parametrize("as_object", [False, True], ids=["name", "context"])
def test_context_chooses_the_start_method(
    make_mp: MakeMpPool, method: str, as_object: bool
) -> None:
    # A fork worker inherits what the parent set at run time; a spawned or forkserver one not.
    jobs.set_state("parent")
    try:
        for start, inherits in ((method, False), ("fork", True)):
            context = multiprocessing.get_context(start) if as_object else start
            pool = jmp.Pool(1, context=context)
            try:
                assert (within(pool.apply, jobs.get_state) == "parent") is inherits
            finally:
                pool.terminate()
                within(pool.join)
    finally:
        jobs.set_state(None)


def test_maxtasksperchild_initializer_and_job_timeout(make_mp: MakeMpPool) -> None:
    pool = make_mp("process-forkserver", 1, maxtasksperchild=2)
    pids = [within(pool.apply, jobs.get_pid) for _ in range(6)]
    assert len(set(pids)) == 3 and pids[0] == pids[1] != pids[2] == pids[3]

    pool = make_mp("process-forkserver", 1, initializer=jobs.set_state, initargs=["ready"])
    assert within(pool.apply, jobs.get_state) == "ready"

    pool = make_mp("process-forkserver", 2, job_timeout=0.5)
    with pytest.raises(JobTimeoutError):
        pool.apply_async(jobs.sleep_for, (30,)).get(WAIT)
    with pytest.raises(JobTimeoutError):  # a map's time limit applies per item
        within(pool.map, jobs.sleep_for, [0, 30, 0])


def test_max_pending_makes_submitting_wait(make_mp: MakeMpPool) -> None:
    pool = make_mp("thread", 1, max_pending=1)
    with StartGate() as gate:
        running = pool.apply_async(jobs.gate_job, (gate.address, "run", 1))
        gate.wait_for("run")
        queued = pool.apply_async(jobs.square, (2,))
        submitted = threading.Event()
        third: list[jmp.AsyncResult[int]] = []

        def submit_third() -> None:
            third.append(pool.apply_async(jobs.square, (3,)))
            submitted.set()

        thread = threading.Thread(target=submit_third)
        thread.start()
        wait_blocked_in(thread, "reserve")  # the queue holds one job: the third waits for a slot
        assert not submitted.is_set()
        gate.release("run")
        join_or_fail(thread)
        assert [running.get(WAIT), queued.get(WAIT), third[0].get(WAIT)] == [1, 4, 9]


def test_dask_backend_runs_the_same_code(dask_address: str) -> None:
    with jmp.Pool(2, backend="dask", address=dask_address) as pool:
        assert within(pool.apply, jobs.add, (1, 2)) == 3
        assert within(pool.map, jobs.square, range(5)) == [0, 1, 4, 9, 16]
        assert within(list, pool.imap(lambda x: x + 1, range(3))) == [1, 2, 3]
        seen: list[int] = []
        assert pool.apply_async(jobs.square, (6,), callback=seen.append).get(WAIT) == 36
        assert seen == [36]
        pool.close()
        within(pool.join)


# --- the module -----------------------------------------------------------------------------------


def test_the_module_stands_in_for_multiprocessing() -> None:
    assert jmp.TimeoutError is multiprocessing.TimeoutError
    assert jmp.ApplyResult is jmp.AsyncResult
    assert jmp.cpu_count() == multiprocessing.cpu_count()
    assert jmp.Queue is multiprocessing.Queue  # every other name is the stdlib's
    assert issubclass(jmp.ThreadPool, jmp.Pool)
    with pytest.raises(AttributeError, match=r"jobpool\.multiprocessing.* 'no_such_name'"):
        jmp.no_such_name  # noqa: B018
    pool = jmp.ThreadPool(1)
    try:
        with pytest.raises(NotImplementedError, match="cannot be passed between processes"):
            __import__("pickle").dumps(pool)
    finally:
        pool.close()
        within(pool.join)


def test_a_pool_dropped_while_running_warns() -> None:
    pool = jmp.ThreadPool(1)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()


# --- scripts as written for the stdlib ------------------------------------------------------------

TUTORIAL = """\
from jobpool.multiprocessing import Pool
from jobpool.multiprocessing import ThreadPool
import time


def square(x):
    return x * x


if __name__ == "__main__":
    start = time.time()
    pool = Pool(processes=50)
    results = [pool.apply_async(square, (a,)) for a in range(1, 2000)]
    output = [p.get() for p in results]
    print("Process pool:", sum(output), time.time() - start)

    start = time.time()
    pool = ThreadPool(processes=50)
    results = [pool.apply_async(square, (a,)) for a in range(1, 2000)]
    output = [p.get() for p in results]
    print("Thread pool:", sum(output), time.time() - start)
"""


def run_script(tmp_path: Any, text: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tutorial.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


@pytest.mark.slow
def test_the_classic_tutorial_script_runs_with_only_its_import_changed(tmp_path: Any) -> None:
    done = run_script(tmp_path, TUTORIAL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["Process", "pool:", "2664667000"],
        ["Thread", "pool:", "2664667000"],
    ]
    assert done.stderr == ""


@pytest.mark.slow
def test_the_tutorial_script_without_a_main_guard(tmp_path: Any) -> None:
    """Workers never import the script (issue 13): no guard needed, as with jobpool.Pool."""
    done = run_script(tmp_path, TUTORIAL.replace('if __name__ == "__main__":', "if True:"))
    assert done.returncode == 0 and "2664667000" in done.stdout, done.stderr


TESTS = os.path.dirname(os.path.abspath(__file__))

CHILD = textwrap.dedent(
    """
    import os
    import sys
    sys.path.insert(0, {tests!r})
    import jobs
    from jobpool.multiprocessing import Pool

    if __name__ == "__main__":
        with Pool(2, context={method!r}) as pool:
            results = [pool.apply_async(jobs.announce_and_sleep, (120,)) for _ in range(2)]
            os.write(1, b"WAITING\\n")  # one write, so that no worker line splits it
            results[0].get()
        print("NOT REACHED", flush=True)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="as tests/test_exit.py")
@pytest.mark.parametrize("how", ["ctrl-c", "parent-killed"])
@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_no_worker_outlives_a_ctrl_c_or_a_killed_parent(method: str, how: str) -> None:
    import signal

    from proctree import Child, assert_no_zombies, descendants, reap, subreaper, wait_exited

    with subreaper():
        child = Child(CHILD.format(tests=TESTS, method=method))
        family: set[int] = set()
        try:
            workers = child.worker_pids(2)
            family = descendants(child.proc.pid)
            child.proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
            still = wait_exited(workers, 5.0)
            assert not still, f"workers {still} outlived the parent's {how}"
            code = child.finish()
        finally:
            family |= descendants(child.proc.pid)
            child.kill()
            leftovers = reap(family)
        if how == "ctrl-c":
            assert "KeyboardInterrupt" in child.stderr and code != 0
        assert not leftovers, f"processes still there: {leftovers}"
        assert_no_zombies()
