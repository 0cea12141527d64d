"""Retries (``retries=``, ``retry_on=``, the delays): a failed job runs again, up to N more times.

Runs are counted by marker files (``jobs.run_number``), so a test sees how often each job and
each map item ran in whatever process. Delays are checked as the pool chose them (the notes of
the final error, and the policy's own ``delay_before`` with a seeded random); a job waiting for
its next attempt is seen through ``stats().waiting_to_retry``, never through a sleep.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

import jobs
from conftest import PROCESS, PROCESS_BACKENDS, WAIT, MakePool, join_or_fail, wait_until
from jobpool import (
    DependencyError,
    JobKilledError,
    JobTimeoutError,
    Pool,
    PoolStats,
    QueueFull,
    WorkerCrashedError,
)
from jobpool._job import Call, Job, Outcomes
from jobpool._retry import KEPT, Attempts, FirstAttempts, Retries, stop_retrying
from jobpool._retry_policy import MAX_RETRIES, RetryPolicy, make_policy

NOTES = sys.version_info >= (3, 11)  # exception notes (add_note)

# No delay unless the test is about delays: retries then take no wall time.
FAST = {"retry_delay": 0.0}


def runs(directory: Path) -> dict[str, int]:
    return jobs.runs_of(str(directory))


def settles(pool: Pool, **expected: int) -> PoolStats:
    """Wait until ``pool.stats()`` has these counts (a future resolves a moment before its
    count moves), then return the stats."""

    def matches() -> bool:
        stats = pool.stats()
        return all(getattr(stats, name) == value for name, value in expected.items())

    wait_until(matches, f"stats {expected}, now {pool.stats()}")
    return pool.stats()


# --- attempts ----------------------------------------------------------------------------------


def test_a_job_that_fails_twice_succeeds_on_its_third_attempt(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 2, retries=3, **FAST)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a", 2)
    assert future.result(timeout=WAIT) == "a"
    assert runs(tmp_path) == {"a": 3}
    settles(pool, submitted=1, done=1, failed=0, retried=2, running=0, waiting_to_retry=0)


def test_the_last_failure_carries_every_attempt(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, 1, retries=2, retry_delay=0.001, retry_jitter=0.0)
    exc = pool.submit(jobs.always_fail, "nope").exception(timeout=WAIT)
    assert isinstance(exc, ValueError) and str(exc) == "nope"
    attempts = exc.jobpool_attempts  # type: ignore[attr-defined]
    assert len(attempts) == 3 and attempts[-1] is exc
    assert all(isinstance(e, ValueError) and str(e) == "nope" for e in attempts)
    if NOTES:
        assert exc.__notes__ == [
            "jobpool: attempt 1 raised ValueError: nope; retried after 0.001 s",
            "jobpool: attempt 2 raised ValueError: nope; retried after 0.002 s",
            "jobpool: attempt 3 raised this; retries=2 used up",
        ]
    settles(pool, failed=1, retried=2, done=0)


def test_without_retries_nothing_changes(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("thread", 1)
    exc = pool.submit(jobs.fail_first, str(tmp_path), "a").exception(timeout=WAIT)
    assert isinstance(exc, ValueError)
    assert not hasattr(exc, "jobpool_attempts")
    assert runs(tmp_path) == {"a": 1}
    settles(pool, failed=1, retried=0)


def test_options_set_and_unset_retries_per_job(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("thread", 1, retries=2, **FAST)
    d = str(tmp_path)
    assert pool.submit(jobs.fail_first, d, "pool", 2).result(timeout=WAIT) == "pool"
    off = pool.options(retries=0).submit(jobs.fail_first, d, "off")
    assert isinstance(off.exception(timeout=WAIT), ValueError)
    more = pool.options(retries=4).submit(jobs.fail_first, d, "more", 4)
    assert more.result(timeout=WAIT) == "more"
    plain = make_pool("thread", 1)
    view = plain.options(retries=1, retry_delay=0)
    assert view.submit(jobs.fail_first, d, "view").result(timeout=WAIT) == "view"
    assert runs(tmp_path) == {"pool": 3, "off": 1, "more": 5, "view": 2}


def test_async_run_retries(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("thread", 1, retries=1, **FAST)
    result = asyncio.run(asyncio.wait_for(pool.run(jobs.fail_first, str(tmp_path), "a"), WAIT))
    assert result == "a" and runs(tmp_path) == {"a": 2}


# --- the delays --------------------------------------------------------------------------------


def test_the_delay_grows_up_to_its_ceiling() -> None:
    policy = RetryPolicy(9, Exception, delay=0.5, backoff=3.0, max_delay=10.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.delay_before(n, rng) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    # A billion retries later the power overflows a float: the ceiling, not an error.
    assert policy.delay_before(MAX_RETRIES, rng) == 10.0
    no_delay = RetryPolicy(9, Exception, delay=0.0, backoff=2.0, max_delay=10.0, jitter=0.5)
    assert {no_delay.delay_before(n, rng) for n in (1, 2, 1100, MAX_RETRIES)} == {0.0}


def test_jitter_spreads_each_delay_around_its_base() -> None:
    policy = RetryPolicy(9, Exception, delay=1.0, backoff=2.0, max_delay=60.0, jitter=0.5)
    rng = random.Random(1)
    for n in range(1, 6):
        delays = {policy.delay_before(n, rng) for _ in range(200)}
        base = 2.0 ** (n - 1)
        assert all(0.5 * base <= d <= 1.5 * base for d in delays)
        assert len(delays) > 100  # not one fixed value
        assert min(delays) < 0.7 * base and max(delays) > 1.3 * base


def test_each_retry_waited_the_delay_chosen_for_it(make_pool: MakePool) -> None:
    """The delays the pool scheduled, as the final error's notes record them."""
    if not NOTES:
        pytest.skip("the delays are read from exception notes (Python 3.11+)")
    pool = make_pool("thread", 1, retries=3, retry_delay=0.01, retry_backoff=3.0, retry_jitter=0)
    exc = pool.submit(jobs.always_fail).exception(timeout=WAIT)
    assert exc is not None
    delays = [note.rsplit("after ", 1)[1] for note in exc.__notes__[:3]]
    assert delays == ["0.01 s", "0.03 s", "0.09 s"]


def test_a_job_waiting_to_retry_holds_no_worker(make_pool: MakePool, backend: str) -> None:
    """With one worker, another job runs while the first waits out its (long) delay."""
    pool = make_pool(backend, 1, retries=1, retry_delay=600)
    failing = pool.submit(jobs.always_fail)
    wait_until(lambda: pool.stats().waiting_to_retry == 1, "the job waits to retry")
    assert pool.submit(jobs.square, 7).result(timeout=WAIT) == 49
    assert not failing.done() and not failing.running()
    assert failing.cancel()
    assert failing.cancelled()
    settles(pool, waiting_to_retry=0, cancelled=1, retried=1, running=0)


# --- what is retried ---------------------------------------------------------------------------


def test_retry_on_classes_retry_only_those(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("thread", 1, retries=3, retry_on=(KeyError, ValueError), **FAST)
    d = str(tmp_path)
    assert pool.submit(jobs.fail_first, d, "listed").result(timeout=WAIT) == "listed"
    view = pool.options(retry_on=KeyError)
    exc = view.submit(jobs.fail_first, d, "other").exception(timeout=WAIT)
    assert isinstance(exc, ValueError)
    assert exc.jobpool_attempts == (exc,)  # type: ignore[attr-defined]
    assert runs(tmp_path) == {"listed": 2, "other": 1}


def test_retry_on_a_predicate(make_pool: MakePool, tmp_path: Path) -> None:
    seen: list[BaseException] = []

    def transient(exc: BaseException) -> bool:
        seen.append(exc)
        return "transient" in str(exc)

    pool = make_pool("thread", 1, retries=5, retry_on=transient, **FAST)
    calls = iter(["transient 1", "transient 2", "permanent"])

    def job() -> None:
        raise OSError(next(calls))

    exc = pool.submit(job).exception(timeout=WAIT)
    assert str(exc) == "permanent"
    assert [str(e) for e in seen] == ["transient 1", "transient 2", "permanent"]
    assert [str(e) for e in exc.jobpool_attempts] == [  # type: ignore[union-attr]
        "transient 1", "transient 2", "permanent"
    ]  # fmt: skip
    if NOTES:
        assert exc.__notes__[-1] == "jobpool: attempt 3 raised this; retry_on said not to retry it"


@pytest.mark.logs_errors  # the predicate's error is logged, with its traceback
def test_a_predicate_that_raises_fails_the_job_with_its_own_error(
    make_pool: MakePool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    pool = make_pool("thread", 1, retries=5, retry_on=broken, **FAST)
    exc = pool.submit(jobs.fail_first, str(tmp_path), "a").exception(timeout=WAIT)
    assert isinstance(exc, ValueError)  # the job's own error: not the predicate's, not retried
    assert runs(tmp_path) == {"a": 1}
    if NOTES:
        assert exc.__notes__ == [
            "jobpool: attempt 1 raised this; the retry_on predicate raised RuntimeError: "
            "predicate bug; not retried"
        ]
    assert "retry_on predicate" in caplog.text and "predicate bug" in caplog.text


def test_a_killed_job_is_not_retried(make_pool: MakePool, backend: str, gate: Any) -> None:
    pool = make_pool(backend, 1, retries=5, **FAST)
    future = pool.submit(jobs.gate_job, gate.address, "k")
    gate.wait_for("k")
    assert pool.kill(future)
    assert isinstance(future.exception(timeout=WAIT), JobKilledError)
    gate.release_all()
    settles(pool, retried=0, failed=1)
    assert pool.submit(jobs.square, 3).result(timeout=WAIT) == 9


def test_kill_stops_the_attempt_that_runs_not_one_given_up_on(
    make_pool: MakePool, tmp_path: Path, gate: Any
) -> None:
    """On threads, an attempt past its limit runs on in its abandoned thread while the next
    one runs: Pool.kill() stops the one that runs."""
    pool = make_pool("thread", 2, retries=1, **FAST)
    # The limit puts the first attempt aside; the second must still run when killed: 3 s for
    # the test to call kill() once it arrives at the gate.
    future = pool.options(timeout=3).submit(jobs.gate_each_run, gate.address, str(tmp_path), "a")
    gate.wait_for("a0")  # the first attempt, held at the gate past its limit
    gate.wait_for("a1")  # the second, in another thread
    assert pool.kill(future) is True
    assert isinstance(future.exception(timeout=WAIT), JobKilledError)
    gate.release_all()


def test_a_job_whose_input_failed_is_not_retried(make_pool: MakePool, tmp_path: Path) -> None:
    """Its input was retried to its end; the job itself never ran."""
    pool = make_pool("thread", 2, retries=2, **FAST)
    d = str(tmp_path)
    source = pool.submit(jobs.fail_first, d, "source", 10)
    dependent = pool.submit(jobs.fail_first, d, "dependent", 0, source)
    assert isinstance(dependent.exception(timeout=WAIT), DependencyError)
    assert runs(tmp_path) == {"source": 3}


def test_a_job_others_wait_for_resolves_after_its_last_attempt(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = make_pool("thread", 2, retries=2, **FAST)
    d = str(tmp_path)
    source = pool.submit(jobs.fail_first, d, "source", 2, 5)
    dependent = pool.submit(jobs.square, source)
    assert dependent.result(timeout=WAIT) == 25
    assert runs(tmp_path) == {"source": 3}


# --- crashes and time limits -------------------------------------------------------------------


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_crashed_worker_is_retried(make_pool: MakePool, backend: str, tmp_path: Path) -> None:
    pool = make_pool(backend, 1, retries=2, **FAST)
    assert pool.submit(jobs.crash_first, str(tmp_path), "c", 2).result(timeout=WAIT) == "c"
    assert settles(pool, retried=2, done=1, failed=0).worker_restarts >= 2


@pytest.mark.parametrize("backend", PROCESS)
def test_a_crash_not_in_retry_on_is_final(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 1, retries=2, retry_on=ValueError, **FAST)
    exc = pool.submit(jobs.crash_first, str(tmp_path), "c").exception(timeout=WAIT)
    assert isinstance(exc, WorkerCrashedError)
    assert runs(tmp_path) == {"c": 1}


def test_a_time_limit_is_retried(
    make_pool: MakePool, backend: str, tmp_path: Path, gate: Any
) -> None:
    """The first run waits at the gate past its limit (on threads it waits on, abandoned, until
    the gate closes); the second returns at once, well within the same limit."""
    pool = make_pool(backend, 1, retries=1, **FAST)
    future = pool.options(timeout=2).submit(jobs.gate_first_run, gate.address, str(tmp_path), "t")
    assert future.result(timeout=WAIT) == "t"
    settles(pool, retried=1, timed_out=0, done=1)
    assert runs(tmp_path) == {"t": 2}


def test_a_time_limit_on_every_attempt_fails_as_a_time_limit(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = make_pool("process-fork", 1, retries=1, **FAST)
    future = pool.options(timeout=0.2).submit(jobs.sleep_for, 30)
    exc = future.exception(timeout=WAIT)
    assert isinstance(exc, JobTimeoutError)
    assert [type(e) for e in exc.jobpool_attempts] == [JobTimeoutError] * 2  # type: ignore[attr-defined]
    settles(pool, retried=1, timed_out=1, failed=1)


# --- map ---------------------------------------------------------------------------------------


def test_map_retries_the_items_that_failed_not_their_chunks(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 2, retries=2, **FAST)
    d = str(tmp_path)
    flaky = {3, 11}
    results = pool.starmap(
        jobs.fail_first,
        [(d, i, 1 if i in flaky else 0, i * 10) for i in range(20)],
        chunksize=5,
        timeout=WAIT,
    )
    assert list(results) == [i * 10 for i in range(20)]
    expected = {str(i): 2 if i in flaky else 1 for i in range(20)}
    assert runs(tmp_path) == expected
    settles(pool, retried=2)  # one retry in each of the two chunks


def test_map_item_that_fails_for_good_keeps_the_others(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 2, retries=2, **FAST)
    d = str(tmp_path)
    errors: list[BaseException] = []
    results = list(
        pool.starmap(
            jobs.fail_first,
            [(d, i, 9 if i == 2 else (1 if i == 0 else 0)) for i in range(6)],
            chunksize=6,
            on_error=errors.append,
            timeout=WAIT,
        )
    )
    assert results == [0, 1, 3, 4, 5]
    (exc,) = errors
    assert isinstance(exc, ValueError) and len(exc.jobpool_attempts) == 3  # type: ignore[attr-defined]
    assert runs(tmp_path) == {"0": 2, "1": 1, "2": 3, "3": 1, "4": 1, "5": 1}


@pytest.mark.parametrize("backend", PROCESS)
def test_map_chunk_whose_worker_crashed_runs_again(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    """A crash fails the chunk as a whole: its items run again, those before the crash too
    (their outcomes died with the worker); y never ran in the first attempt."""
    pool = make_pool(backend, 1, retries=1, **FAST)
    d = str(tmp_path)
    items = [(d, "x", 0), (d, "crash", 1), (d, "y", 0)]
    results = list(pool.starmap(_crash_item, items, chunksize=3, timeout=WAIT))
    assert results == ["x", "crash", "y"]
    assert runs(tmp_path) == {"x": 2, "crash": 2, "y": 1}


def _crash_item(directory: str, tag: str, crash: int) -> Any:
    return jobs.crash_first(directory, tag, crash)


def test_map_item_retried_after_a_first_partial_outcome_then_a_crash(
    make_pool: MakePool, tmp_path: Path
) -> None:
    """Item a raises in attempt 1 (b succeeds); attempt 2 (a alone) crashes; attempt 3 works:
    b's value from attempt 1 is kept."""
    pool = make_pool("process-fork", 1, retries=2, **FAST)
    d = str(tmp_path)
    results = list(pool.starmap(_raise_then_crash, [(d, "a"), (d, "b")], chunksize=2, timeout=WAIT))
    assert results == ["a", "b"]
    assert runs(tmp_path) == {"a": 3, "b": 1}


def _raise_then_crash(directory: str, tag: str) -> str:
    import os

    if tag == "a":
        n = jobs.run_number(directory, tag)
        if n == 0:
            raise ValueError("first")
        if n == 1:
            os._exit(3)
        return tag
    jobs.run_number(directory, tag)
    return tag


# --- stopping a job that waits to retry --------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "kill"])
def test_cancel_or_kill_stops_a_job_waiting_to_retry(
    make_pool: MakePool, backend: str, tmp_path: Path, how: str
) -> None:
    pool = make_pool(backend, 1, retries=3, retry_delay=600)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a", 5)
    wait_until(lambda: pool.stats().waiting_to_retry == 1, "the job waits to retry")
    assert (future.cancel() if how == "cancel" else pool.kill(future)) is True
    with pytest.raises(CancelledError):
        future.result(timeout=0)
    settles(pool, waiting_to_retry=0, cancelled=1, running=0)
    assert runs(tmp_path) == {"a": 1}


def test_shutdown_waits_for_a_job_waiting_to_retry(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 1, retries=1, retry_delay=0.05)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a")
    wait_until(lambda: future.done() or pool.stats().waiting_to_retry == 1, "a retry")
    pool.shutdown(wait=True)
    assert future.result(timeout=0) == "a"
    assert runs(tmp_path) == {"a": 2}


def test_shutdown_waits_for_a_running_job_that_will_retry(
    make_pool: MakePool, backend: str, tmp_path: Path, gate: Any
) -> None:
    """shutdown() begins while the first attempt runs; that attempt fails after it: the
    workers must still be there for the second."""
    pool = make_pool(backend, 1, retries=1, **FAST)
    future = pool.submit(jobs.gate_then_fail_first, gate.address, str(tmp_path), "a")
    gate.wait_for("a")
    closing = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    closing.start()
    wait_until(lambda: pool._intake.state.value == "closed", "shutdown began")
    gate.release("a")
    join_or_fail(closing)
    assert future.result(timeout=0) == "a"


def test_shutdown_cancel_futures_cancels_a_job_waiting_to_retry(
    make_pool: MakePool, backend: str, tmp_path: Path
) -> None:
    pool = make_pool(backend, 1, retries=3, retry_delay=600)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a", 5)
    wait_until(lambda: pool.stats().waiting_to_retry == 1, "the job waits to retry")
    pool.shutdown(wait=True, cancel_futures=True)
    assert future.cancelled()
    assert runs(tmp_path) == {"a": 1}


def test_shutdown_cancel_futures_retries_nothing_after_it(
    make_pool: MakePool, tmp_path: Path, gate: Any
) -> None:
    pool = make_pool("thread", 1, retries=3, **FAST)
    future = pool.submit(jobs.gate_then_fail_first, gate.address, str(tmp_path), "a")
    gate.wait_for("a")
    closing = threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True})
    closing.start()
    wait_until(lambda: pool._intake.state.value == "closed", "shutdown began")
    gate.release("a")
    join_or_fail(closing)
    exc = future.exception(timeout=0)
    assert isinstance(exc, ValueError)
    if NOTES:
        assert exc.__notes__ == ["jobpool: attempt 1 raised this; not retried: the pool is "
                                 "shutting down"]  # fmt: skip
    assert runs(tmp_path) == {"a": 1}


def test_shutdown_without_waiting_still_runs_a_job_waiting_to_retry(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = make_pool("thread", 1, retries=1, retry_delay=0.05)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a")
    wait_until(lambda: future.done() or pool.stats().waiting_to_retry == 1, "a retry")
    pool.shutdown(wait=False)
    assert future.result(timeout=WAIT) == "a"
    assert runs(tmp_path) == {"a": 2}


def test_cancelling_the_task_awaiting_run_stops_the_retries(
    make_pool: MakePool, tmp_path: Path, gate: Any
) -> None:
    """With on_cancel="leave" the running attempt finishes; nobody awaits another: none runs."""
    pool = make_pool("thread", 1, retries=3, **FAST)
    view = pool.options(on_cancel="leave")

    async def main() -> None:
        task = asyncio.ensure_future(
            view.run(jobs.gate_then_fail_first, gate.address, str(tmp_path), "a")
        )
        await asyncio.get_running_loop().run_in_executor(None, gate.wait_for, "a")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), WAIT))
    gate.release("a")
    settles(pool, failed=1, retried=0, running=0)
    assert runs(tmp_path) == {"a": 1}


def test_terminate_cancels_a_job_waiting_to_retry(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("process-fork", 1, retries=3, retry_delay=600)
    future = pool.submit(jobs.fail_first, str(tmp_path), "a", 5)
    wait_until(lambda: pool.stats().waiting_to_retry == 1, "the job waits to retry")
    pool.terminate()
    assert future.cancelled()


def test_a_cancelled_queued_job_with_retries_lets_shutdown_finish(
    make_pool: MakePool, backend: str, gate: Any
) -> None:
    """A job that may retry is counted until it ends; cancelled in the queue, it ends there."""
    pool = make_pool(backend, 1, retries=2, **FAST)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    gate.wait_for("blocker")
    queued = pool.submit(jobs.always_fail)
    assert queued.cancel()
    gate.release("blocker")
    closing = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    closing.start()
    join_or_fail(closing)
    assert blocker.done() and queued.cancelled()


def test_a_job_refused_for_a_full_queue_lets_shutdown_finish(
    make_pool: MakePool, gate: Any
) -> None:
    pool = make_pool("thread", 1, retries=2, max_pending=1, **FAST)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    gate.wait_for("blocker")
    waiting = pool.submit(jobs.square, 3)
    with pytest.raises(QueueFull):
        pool.submit_nowait(jobs.square, 4)
    gate.release("blocker")
    closing = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    closing.start()
    join_or_fail(closing)
    assert blocker.done() and waiting.result(timeout=0) == 9


def test_map_items_whose_input_failed_and_others_that_retry(
    make_pool: MakePool, tmp_path: Path
) -> None:
    """A chunk with a failed input runs its other items as a part of its own; they retry."""
    pool = make_pool("thread", 2, retries=2, **FAST)
    d = str(tmp_path)
    source = pool.options(retries=0).submit(jobs.always_fail)
    assert source.exception(timeout=WAIT) is not None
    items = [(d, "a", 1, 1), (d, "b", 0, source), (d, "c", 0, 3)]
    errors: list[BaseException] = []
    results = list(
        pool.starmap(jobs.fail_first, items, chunksize=3, on_error=errors.append, timeout=WAIT)
    )
    assert results == [1, 3]
    assert [type(e) for e in errors] == [DependencyError]
    assert runs(tmp_path) == {"a": 2, "c": 1}
    closing = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    closing.start()
    join_or_fail(closing)


def test_map_chunk_that_crashed_then_raised_keeps_each_items_history(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = make_pool("process-fork", 1, retries=2, **FAST)
    d = str(tmp_path)
    errors: list[BaseException] = []
    items = [(d, "a"), (d, "b")]
    on_error = errors.append
    results = list(
        pool.starmap(_crash_then_raise, items, chunksize=2, on_error=on_error, timeout=WAIT)
    )
    assert results == ["b"]
    (exc,) = errors
    assert [type(e) for e in exc.jobpool_attempts] == [  # type: ignore[attr-defined]
        WorkerCrashedError, ValueError, ValueError
    ]  # fmt: skip
    assert runs(tmp_path) == {"a": 3, "b": 1}


def _crash_then_raise(directory: str, tag: str) -> str:
    import os

    n = jobs.run_number(directory, tag)
    if tag == "a":
        if n == 0:
            os._exit(3)  # the whole chunk fails: b has not run yet
        raise ValueError(f"a: run {n}")
    return tag


def _job_in_attempt(record: str, retries: Retries, outcomes: Outcomes) -> Job:
    """A started job with ``retries=3`` in its first attempt (the pool's FirstAttempts, as
    ``submit`` makes it) or in its second (its own Attempts, as a retried call or a map
    chunk has), counted among the jobs that may retry as ``Intake.enqueue`` counts it."""
    policy = make_policy(None, 3, delay=600)
    assert policy is not None
    job = Job(Call(jobs.square, (2,), {}), None)
    if record == "first attempt":
        job.retry = FirstAttempts(policy, retries)
    else:
        job.retry = job.future._retry = Attempts(policy, retries, job, chunk=False)
        job.retry.number = 2
    job.retry.track(job)
    assert outcomes.start(job)
    return job


@pytest.mark.parametrize("record", ["first attempt", "later attempt"])
@pytest.mark.parametrize("first", ["result", "error"])
def test_the_second_outcome_of_one_attempt_is_dropped(first: str, record: str) -> None:
    """A time limit and a result in a race (a thread given up on returns just then): the first
    to report wins; the second neither resolves the future again nor starts a retry."""
    outcomes = Outcomes()
    retries = Retries(None, outcomes)
    job = _job_in_attempt(record, retries, outcomes)
    timeout = JobTimeoutError(1.0)
    if first == "result":
        assert outcomes.succeed(job, 4)
        assert not outcomes.fail(job, timeout, timed_out=True)
        assert job.future.result(timeout=0) == 4
    else:
        stop_retrying([job.future])  # this attempt's failure is final
        assert outcomes.fail(job, timeout, timed_out=True)
        assert not outcomes.succeed(job, 4)
        assert job.future.exception(timeout=0) is timeout
    assert retries.count_waiting() == 0 and outcomes.retried == 0
    assert not retries.live, "an ended job is still counted as one that may retry"
    retries.close()


@pytest.mark.parametrize("record", ["first attempt", "later attempt"])
def test_outcomes_of_one_attempt_racing_in_many_threads_count_once(record: str) -> None:
    """Eight threads report one attempt at once, half a result and half a failure that may
    be retried: exactly one counts (a result, or one retry), and the job is counted among
    those that may retry exactly while it may."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave within an outcome, not only between them
    try:
        for lag in range(0, 20_000, 100):
            _race_one_attempt(record, lag)
    finally:
        sys.setswitchinterval(switch)


def _race_one_attempt(record: str, lag: int) -> None:
    """One round: the results come ``lag`` steps of a loop after the failures (a failure's
    path is longer: without a lag, a result nearly always comes first)."""
    outcomes = Outcomes()
    retries = Retries(None, outcomes)
    job = _job_in_attempt(record, retries, outcomes)
    start = threading.Barrier(8, timeout=WAIT)
    counted: list[bool] = []

    def report(i: int, job: Job = job, start: threading.Barrier = start) -> None:
        start.wait()
        if i % 2:
            for _ in range(lag):
                pass
            counted.append(outcomes.succeed(job, 4))
        else:
            counted.append(outcomes.fail(job, ConnectionError("hiccup")))

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join_or_fail(thread)
    assert len(counted) == 8, counted  # a thread that raised reported nothing
    assert counted.count(True) == 1, counted
    if job.future.done():  # the result won
        assert job.future.result(timeout=0) == 4
        assert outcomes.retried == 0 and not retries.live
    else:  # a failure won: the next attempt waits, and is what is counted
        assert outcomes.retried == 1 and retries.count_waiting() == 1
        assert len(retries.live) == 1 and job not in retries.live
        # Pool.kill() finds the record that decides, not one a losing failure made
        assert retries.live == {job.future._retry}
        job.future.cancel()
        assert not retries.live
    retries.close()


def test_the_retry_timer_thread_ends_when_nothing_waits(make_pool: MakePool) -> None:
    """A pool dropped without shutdown() must not leave a timer thread sleeping for good."""
    pool = make_pool("thread", 1, retries=1, **FAST)
    assert isinstance(pool.submit(jobs.always_fail).exception(timeout=WAIT), ValueError)
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "jobpool-retries"],
        "the retry timer thread to end",
    )
    assert pool.submit(jobs.square, 2).result(timeout=WAIT) == 4


# --- bad options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"retries": -1}, ValueError, "between 0"),
        ({"retries": MAX_RETRIES + 1}, ValueError, "between 0"),
        ({"retries": True}, TypeError, "must be an int"),
        ({"retries": 2.0}, TypeError, "must be an int"),
        ({"retries": "3"}, TypeError, "must be an int"),
        ({"retries": 1, "retry_on": ()}, ValueError, "retries nothing"),
        ({"retries": 1, "retry_on": KeyboardInterrupt}, ValueError, "never retried"),
        ({"retries": 1, "retry_on": (ValueError, JobKilledError)}, ValueError, "never retried"),
        ({"retries": 1, "retry_on": CancelledError}, ValueError, "never retried"),
        ({"retries": 1, "retry_on": (ValueError, 3)}, TypeError, "not an exception class"),
        ({"retries": 1, "retry_on": "ValueError"}, TypeError, "a predicate"),
        ({"retries": 1, "retry_delay": -1}, ValueError, "retry_delay must be between"),
        ({"retries": 1, "retry_delay": float("nan")}, ValueError, "retry_delay"),
        ({"retries": 1, "retry_delay": float("inf")}, ValueError, "retry_delay"),
        ({"retries": 1, "retry_delay": 1e9}, ValueError, "retry_delay"),
        ({"retries": 1, "retry_delay": "1"}, TypeError, "retry_delay must be a number"),
        ({"retries": 1, "retry_backoff": 0.5}, ValueError, "retry_backoff"),
        ({"retries": 1, "retry_max_delay": 1e12}, ValueError, "retry_max_delay"),
        ({"retries": 1, "retry_jitter": 2}, ValueError, "retry_jitter"),
        ({"retry_on": ValueError}, ValueError, "without retries"),
        ({"retry_delay": 1.0}, ValueError, "set retries=N"),
    ],
)
def test_absurd_retry_options_are_refused(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        Pool(1, **options)
    with Pool(1) as pool:
        with pytest.raises(error, match=words):
            pool.options(**options)
        assert pool.submit(jobs.square, 2).result(timeout=WAIT) == 4  # nothing lost


def test_a_view_may_change_one_option_of_the_pools_policy() -> None:
    base = make_policy(None, 3, ValueError, 1.0)
    assert base is not None
    view = make_policy(base, delay=0.5)
    assert view is not None
    assert (view.retries, view.retry_on, view.delay, view.backoff) == (3, ValueError, 0.5, 2.0)
    assert make_policy(base, retries=0) is None


# --- adversarial -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["thread", "process-fork"])
def test_a_job_that_fails_thousands_of_times_keeps_little(
    make_pool: MakePool, backend: str
) -> None:
    """retries=10**9 with no delay: each attempt goes through the timer thread (no recursion
    however many), and only the first and last attempts' exceptions are kept."""
    calls = 0

    def until_3000(exc: BaseException) -> bool:
        nonlocal calls
        calls += 1
        return calls < 3000

    pool = make_pool(backend, 1, retries=MAX_RETRIES, retry_on=until_3000, **FAST)
    exc = pool.submit(jobs.always_fail, "again").exception(timeout=WAIT)
    assert isinstance(exc, ValueError)
    assert calls == 3000
    settles(pool, retried=2999, failed=1)
    assert len(exc.jobpool_attempts) == 2 * KEPT + 1  # type: ignore[attr-defined]
    if NOTES:
        assert len(exc.__notes__) == 2 * KEPT + 2
        assert exc.__notes__[KEPT] == "jobpool: ... 2979 more attempts, not kept ..."
        assert (
            exc.__notes__[-1] == "jobpool: attempt 3000 raised this; retry_on said not to retry it"
        )


@pytest.mark.parametrize("backend", ["thread", "process-fork"])
def test_kill_stops_a_job_that_fails_forever(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, 1, retries=MAX_RETRIES, **FAST)
    future = pool.submit(jobs.always_fail)
    wait_until(lambda: pool.stats().retried >= 50, "retries")
    killed = pool.kill(future)
    # Killed while it waited (cancelled) or ran (JobKilledError); or its running attempt failed
    # on its own just before, and, retried no more, kept its own error.
    if future.cancelled():
        assert killed
    else:
        exc = future.exception(timeout=WAIT)
        assert isinstance(exc, JobKilledError if killed else ValueError), (killed, exc)
    settles(pool, waiting_to_retry=0, running=0)
    assert pool.submit(jobs.square, 4).result(timeout=WAIT) == 16


def test_many_threads_submit_jobs_that_retry(make_pool: MakePool) -> None:
    pool = make_pool("thread", 4, retries=2, **FAST)
    failed_once: set[tuple[int, int]] = set()
    lock = threading.Lock()

    def flaky(key: tuple[int, int]) -> tuple[int, int]:
        with lock:
            first = key not in failed_once
            failed_once.add(key)
        if first:
            raise ConnectionError(f"{key} hiccup")
        return key

    results: dict[int, list[Any]] = {}

    def submitter(t: int) -> None:
        futures = [pool.submit(flaky, (t, i)) for i in range(100)]
        results[t] = [f.result(timeout=WAIT) for f in futures]

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join_or_fail(thread)
    assert results == {t: [(t, i) for i in range(100)] for t in range(8)}
    settles(pool, submitted=800, done=800, retried=800, failed=0)


def test_a_retried_job_keeps_its_priority_and_limit(make_pool: MakePool) -> None:
    pool = make_pool("thread", 1)
    view = pool.options(priority=7, timeout=30, retries=1)
    seen: list[tuple[int, Any]] = []
    original = pool._intake.admit

    def admit(job: Any, prepared: bool = False) -> None:
        seen.append((job.priority, job.timeout))
        original(job, prepared)

    pool._intake.admit = admit  # type: ignore[method-assign]
    calls = iter([ValueError("first"), None])

    def job() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    assert view.submit(job).result(timeout=WAIT) == "ok"
    assert seen == [(7, 30.0)]


def test_the_stdlib_dialects_do_not_retry(tmp_path: Path) -> None:
    from jobpool.concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as executor:
        exc = executor.submit(jobs.fail_first, str(tmp_path), "a").exception(timeout=WAIT)
    assert isinstance(exc, ValueError) and not hasattr(exc, "jobpool_attempts")
    assert runs(tmp_path) == {"a": 1}


# --- Dask --------------------------------------------------------------------------------------


def test_dask_retries_jobs_and_map_items(make_pool: MakePool, tmp_path: Path) -> None:
    pool = make_pool("dask", 2, retries=2, **FAST)
    d = str(tmp_path)
    assert pool.submit(jobs.fail_first, d, "job", 2).result(timeout=WAIT) == "job"
    items = [(d, f"m{i}", 1 if i in (1, 4) else 0, i) for i in range(6)]
    assert list(pool.starmap(jobs.fail_first, items, chunksize=3, timeout=WAIT)) == list(range(6))
    assert runs(tmp_path) == {"job": 3, **{f"m{i}": 2 if i in (1, 4) else 1 for i in range(6)}}
    exc = pool.submit(jobs.always_fail).exception(timeout=WAIT)
    assert len(exc.jobpool_attempts) == 3  # type: ignore[union-attr]
