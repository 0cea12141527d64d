"""The steps of the fault campaign (tests/test_fault_campaign.py): each submits or maps jobs, a
fault among them, and says what their futures may end with (see campaign.py).

``STEPS`` maps each step's name to its function; ``PROCESS_ONLY`` names the ones that need
worker processes; ``TAINTS`` what a step may leave broken in its worker for the jobs after it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from typing import Any, Callable, Optional

import campaign_jobs as cj
import hostile
import jobs
from campaign import (
    DESCRIPTORS,
    KILLED_OR_CANCELLED,
    SECOND_REPLY,
    SEGMENTS,
    THRESHOLD,
    TIME_LIMIT,
    Run,
    Tracked,
    cancelled,
    crashed,
    out_of_descriptors,
    raises,
    reprlib_repr,
    returns,
    run_later,
    value,
    wait_for,
)
from conftest import WAIT
from jobpool import (
    JobKilledError,
    JobTimeoutError,
    PerWorkerError,
    QueueFull,
    RemoteError,
    ResultLoadError,
    SerializationError,
    WorkerCrashedError,
    per_worker,
)

# --- the steps ------------------------------------------------------------------------------

StepFn = Callable[[Run, int, list[Tracked]], None]
STEPS: dict[str, StepFn] = {}
PROCESS_ONLY: set[str] = set()
TAINTS: dict[str, tuple[str, ...]] = {}


def step(name: str, process_only: bool = False, taints: tuple[str, ...] = ()) -> Any:
    def register(fn: StepFn) -> StepFn:
        STEPS[name] = fn
        if process_only:
            PROCESS_ONLY.add(name)
        if taints:
            TAINTS[name] = taints
        return fn

    return register


@step("ordinary")
def _ordinary(run: Run, n: int, mine: list[Tracked]) -> None:
    mine.append(run.track(run.pool.submit(jobs.square, n), "ordinary", value(n * n)))


@step("nowait")
def _nowait(run: Run, n: int, mine: list[Tracked]) -> None:
    try:
        future = run.pool.submit_nowait(jobs.add, n, 1)
    except QueueFull:
        return
    mine.append(run.track(future, "nowait", value(n + 1)))


@step("burst")
def _burst(run: Run, n: int, mine: list[Tracked]) -> None:
    """Many short jobs at once: on processes they are sent ahead into busy workers' pipes."""
    for i in range(8 + n):
        mine.append(run.track(run.pool.submit(jobs.add, n, i), "burst", value(n + i)))


@step("slow")
def _slow(run: Run, n: int, mine: list[Tracked]) -> None:
    """Long enough that the jobs sent ahead behind it are recalled."""
    mine.append(run.track(run.pool.submit(jobs.sleep_for, 0.03), "slow", value(0.03)))


@step("mid-burst")
def _mid_burst(run: Run, n: int, mine: list[Tracked]) -> None:
    """Jobs of tens of KB at once, under the shared-memory threshold (their bytes travel in the
    pipe): on Linux they wait in busy workers' sockets while those have room (``outq``)."""
    for i in range(2 + n % 4):
        data = bytes([i]) * (THRESHOLD // 4 + 4096 * n)
        mine.append(run.track(run.pool.submit(cj.reverse_bytes, data), "mid-burst", value(data)))


@step("ms-jobs")
def _ms_jobs(run: Run, n: int, mine: list[Tracked]) -> None:
    """Jobs of a few milliseconds: a worker running them is sent one behind its running one."""
    for _ in range(3 + n % 3):
        mine.append(run.track(run.pool.submit(jobs.sleep_for, 0.003), "ms-jobs", value(0.003)))


@step("large")
def _large(run: Run, n: int, mine: list[Tracked]) -> None:
    data = run.large(n)
    future = run.pool.submit(cj.reverse_bytes, data)
    mine.append(run.track(future, "large", value(data[::-1]), *run.needs(SEGMENTS)))


@step("large-array")
def _large_array(run: Run, n: int, mine: list[Tracked]) -> None:
    import numpy as np

    array = np.arange(THRESHOLD // 8 + 512 * n, dtype=np.int64)
    expected = array * 2
    future = run.pool.submit(cj.double_array, array)
    check = returns(lambda got: bool((got == expected).all()), "the array doubled")
    mine.append(run.track(future, "large-array", check, *run.needs(SEGMENTS)))


@step("raise")
def _raise(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.raise_value_error, f"boom {n}")
    mine.append(run.track(future, "raise", raises(ValueError, lambda e: str(e) == f"boom {n}")))


@step("raise-base")
def _raise_base(run: Run, n: int, mine: list[Tracked]) -> None:
    if n % 2:
        future = run.pool.submit(cj.raise_system_exit, n)
        expect = raises(SystemExit, lambda e: e.code == n)
    else:
        future = run.pool.submit(cj.raise_keyboard_interrupt)
        expect = raises(KeyboardInterrupt)
    mine.append(run.track(future, "raise-base", expect))


@step("unpicklable-result")
def _unpicklable_result(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.return_lock)
    if run.process:
        expect = raises(SerializationError, lambda e: "_thread.lock" in str(e))
    else:  # threads pickle nothing: the lock itself
        expect = returns(lambda got: type(got) is type(threading.Lock()), "a lock")
    mine.append(run.track(future, "unpicklable-result", expect))


@step("unloadable-result")
def _unloadable_result(run: Run, n: int, mine: list[Tracked]) -> None:
    if not run.process:  # nothing is loaded on threads: the object itself
        future = run.pool.submit(jobs.RebuildFails, n)
        expect = returns(lambda got: type(got) is jobs.RebuildFails and got.x == n, "the object")
    elif n % 2:
        future = run.pool.submit(cj.worker_only_thing, n)
        expect = raises(ResultLoadError)
    else:
        future = run.pool.submit(jobs.RebuildFails, n)
        expect = raises(ResultLoadError)
    mine.append(run.track(future, "unloadable-result", expect))


@step("unpicklable-exception")
def _unpicklable_exception(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.raise_unpicklable_error)
    expect = raises(RemoteError if run.process else jobs.UnpicklableError)
    mine.append(run.track(future, "unpicklable-exception", expect))


@step("crash-segfault", process_only=True)
def _segfault(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.segfault)
    mine.append(run.track(future, "crash-segfault", crashed("SIGSEGV")))


@step("crash-exit", process_only=True)
def _exit(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.exit_now, n)
    mine.append(run.track(future, "crash-exit", crashed(None, n)))


@step("crash-sigkill", process_only=True)
def _sigkill(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(jobs.kill_self)
    mine.append(run.track(future, "crash-sigkill", crashed("SIGKILL")))


@step("fork-wait", process_only=True)
def _fork_wait(run: Run, n: int, mine: list[Tracked]) -> None:
    what, status = [("return", 0), ("raise", 1), ("exit", 7)][n % 3]
    future = run.pool.submit(hostile.fork_child_does, what)
    mine.append(run.track(future, "fork-wait", value(status)))


@step("fork-return", process_only=True)
def _fork_return(run: Run, n: int, mine: list[Tracked]) -> None:
    """os.fork(); both return: the copy must end by itself, the worker's reply counts."""
    future = run.pool.submit(hostile.fork_and_return)

    def note_copy(f: Future[Any]) -> None:
        if not f.cancelled() and f.exception() is None:
            cj.record_pid(run.directory, f.result())

    future.add_done_callback(note_copy)
    mine.append(run.track(future, "fork-return", returns(lambda pid: pid > 0, "the copy's pid")))


@step("fork-exec")
def _fork_exec(run: Run, n: int, mine: list[Tracked]) -> None:
    # Threads start a program the safe way (a forked copy of a threaded test process must exec
    # at once, in C); a worker process forks and execs by hand.
    future = run.pool.submit(cj.fork_exec if run.process else cj.run_program, n)
    mine.append(run.track(future, "fork-exec", value(n)))


@step("fork-leave-child", process_only=True)
def _fork_leave_child(run: Run, n: int, mine: list[Tracked]) -> None:
    """A forked copy of the worker, holding all its pipes, runs on after its job returned."""
    future = run.pool.submit(cj.fork_leave_child, run.tether.address, run.tag(), run.directory)
    expect = returns(lambda pid: pid > 0, "the child's pid")
    mine.append(run.track(future, "fork-leave-child", expect))


@step("leave-thread")
def _leave_thread(run: Run, n: int, mine: list[Tracked]) -> None:
    if run.process:  # a non-daemon thread that waits forever
        future = run.pool.submit(hostile.leaves_thread)
        expect = returns(lambda pid: isinstance(pid, int), "a pid")
    else:  # in the test's own process: one that ends when the tether closes
        future = run.pool.submit(cj.leave_thread_until, run.tether.address, run.tag())
        expect = value(1)
    mine.append(run.track(future, "leave-thread", expect))


@step("logging-thread", process_only=True)
def _logging_thread(run: Run, n: int, mine: list[Tracked]) -> None:
    """A thread left sending log records up the worker's pipe between later replies."""
    future = run.pool.submit(cj.leave_logging_thread, 5 + n)
    mine.append(run.track(future, "logging-thread", value(5 + n)))


@step("exhaust-release", process_only=True)
def _exhaust_release(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.exhaust_and_release)
    mine.append(run.track(future, "exhaust-release", returns(lambda k: k >= 0, "a count")))


@step("exhaust-keep", process_only=True, taints=(DESCRIPTORS,))
def _exhaust_keep(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.exhaust_and_keep)
    mine.append(run.track(future, "exhaust-keep", returns(lambda k: k >= 0, "a count")))


@step("exhaust-large-result", process_only=True, taints=(DESCRIPTORS,))
def _exhaust_large_result(run: Run, n: int, mine: list[Tracked]) -> None:
    size = THRESHOLD + 1000 * n
    future = run.pool.submit(cj.exhaust_then_large_result, size)
    mine.append(run.track(future, "exhaust-large-result", value(b"r" * size)))


@step("close-stdio", process_only=True)
def _close_stdio(run: Run, n: int, mine: list[Tracked]) -> None:
    mine.append(run.track(run.pool.submit(cj.close_stdio), "close-stdio", value(3)))


HOW = ["close", "null"]


@step("close-job-pipe", process_only=True)
def _close_job_pipe(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.break_worker_descriptor, "job pipe", HOW[n % 2])
    mine.append(run.track(future, "close-job-pipe", crashed()))


@step("close-recall-pipe", process_only=True)
def _close_recall_pipe(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.break_worker_descriptor, "recall pipe", HOW[n % 2])
    mine.append(run.track(future, "close-recall-pipe", crashed()))  # its worker ends after it


@step("close-segment-socket", process_only=True, taints=(SEGMENTS,))
def _close_segment_socket(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.break_worker_descriptor, "segment socket", HOW[n % 2])
    mine.append(run.track(future, "close-segment-socket", value("segment socket")))


@step("out-of-turn", process_only=True)
def _out_of_turn(run: Run, n: int, mine: list[Tracked]) -> None:
    kinds = ["garbage", "unpicklable", "unknown-tag", "foreign-job", "ready-again", "bad-log"]
    future = run.pool.submit(hostile.send_on_own_pipe, kinds[n % len(kinds)])
    mine.append(run.track(future, "out-of-turn", crashed()))


@step("forged-reply", process_only=True, taints=(SECOND_REPLY,))
def _forged_reply(run: Run, n: int, mine: list[Tracked]) -> None:
    """The job sends its own reply first: the first reply that arrived is kept."""
    future = run.pool.submit(hostile.reply_twice, n)
    mine.append(run.track(future, "forged-reply", value(n)))


@step("setsid", process_only=True)
def _setsid(run: Run, n: int, mine: list[Tracked]) -> None:
    future = run.pool.submit(cj.setsid)
    mine.append(run.track(future, "setsid", raises(PermissionError)))


@step("hang-past-limit")
def _hang(run: Run, n: int, mine: list[Tracked]) -> None:
    limited = run.pool.options(timeout=TIME_LIMIT)
    if not run.process:  # a thread runs on after its limit: until the tether closes
        future = limited.submit(cj.held, run.tether.address, run.tag(), None)
    elif n % 3 == 0:
        future = limited.submit(jobs.sleep_for, 120)
    elif n % 3 == 1:  # a forked child that waits at the tether is stopped with it
        future = limited.submit(
            cj.fork_child_then_hang, run.tether.address, run.tag(), run.directory, 120
        )
    else:
        future = limited.submit(cj.ignore_sigterm_and_hang, 120)
    expect = raises(JobTimeoutError, lambda e: e.timeout == TIME_LIMIT)
    mine.append(run.track(future, "hang-past-limit", expect))


def _held(run: Run, fault: str, result: Any) -> tuple[Tracked, str]:
    """A job that waits at the tether until released or killed (at most workers - 1 at once:
    a worker stays free for the rest)."""
    tag = run.tag()
    future = run.pool.submit(cj.held, run.tether.address, tag, result)
    return run.track(future, fault, value(result)), tag


@step("held-kill")
def _held_kill(run: Run, n: int, mine: list[Tracked]) -> None:
    """pool.kill() of a job that runs (seen at the tether)."""
    if not run.held_slots.acquire(blocking=False):
        return _ordinary(run, n, mine)
    try:
        tracked, tag = _held(run, "held-kill", n)
        mine.append(tracked)
        run.tether.wait_started(tag, tracked.future.done, WAIT)
        _kill(run, tracked)
    finally:
        run.held_slots.release()


@step("held-sigkill", process_only=True)
def _held_sigkill(run: Run, n: int, mine: list[Tracked]) -> None:
    """SIGKILL from outside to the worker of a job that runs."""
    if not run.held_slots.acquire(blocking=False):
        return _ordinary(run, n, mine)
    try:
        tracked, tag = _held(run, "held-sigkill", n)
        mine.append(tracked)
        pid = run.tether.wait_started(tag, tracked.future.done, WAIT)
        if pid is not None:
            tracked.expect = [crashed("SIGKILL")]
            os.kill(pid, 9)
            wait_for(tracked, run)  # its worker's death is seen before the slot is given back
    finally:
        run.held_slots.release()


@step("held-release")
def _held_release(run: Run, n: int, mine: list[Tracked]) -> None:
    """A job that runs until the test lets it go; the thread goes on meanwhile."""
    if not run.held_slots.acquire(blocking=False):
        return _ordinary(run, n, mine)
    tracked, tag = _held(run, "held-release", n)
    mine.append(tracked)

    def release_later() -> None:  # at the thread's next step: while other jobs run
        run.tether.release(tag)
        wait_for(tracked, run)
        run.held_slots.release()

    run_later.set(release_later)


def _kill(run: Run, tracked: Tracked) -> None:
    if run.pool.kill(tracked.future):
        if not tracked.future.done():
            run.problem(f"{tracked.fault}: kill() returned True but the future is not done")
        tracked.expect = list(KILLED_OR_CANCELLED)
    elif not tracked.future.done():
        run.problem(f"{tracked.fault}: kill() returned False for a job that is not over")


@step("kill-soon")
def _kill_soon(run: Run, n: int, mine: list[Tracked]) -> None:
    """pool.kill() right after submit: cancelled, killed, or (too late) its result."""
    future = run.pool.submit(jobs.sleep_for, 0.02)
    tracked = run.track(future, "kill-soon", value(0.02))
    mine.append(tracked)
    _kill(run, tracked)


@step("cancel-soon")
def _cancel_soon(run: Run, n: int, mine: list[Tracked]) -> None:
    tracked = run.track(run.pool.submit(jobs.square, n), "cancel-soon", value(n * n))
    mine.append(tracked)
    if tracked.future.cancel():
        tracked.expect = [cancelled]


@step("kill-earlier")
def _kill_earlier(run: Run, n: int, mine: list[Tracked]) -> None:
    if mine:
        _kill(run, mine[n % len(mine)])


@step("cancel-earlier")
def _cancel_earlier(run: Run, n: int, mine: list[Tracked]) -> None:
    if mine:
        tracked = mine[n % len(mine)]
        if tracked.future.cancel():
            tracked.expect = [cancelled]


@step("per-worker")
def _per_worker(run: Run, n: int, mine: list[Tracked]) -> None:
    handle = per_worker(cj.Offset, 100)
    mine.append(run.track(run.pool.submit(handle.add, n), "per-worker", value(n + 100)))
    broken = per_worker(cj.refuse_to_build, n)
    mine.append(run.track(run.pool.submit(broken.add, n), "per-worker", raises(PerWorkerError)))


@step("initializer")
def _initializer(run: Run, n: int, mine: list[Tracked]) -> None:
    if not run.scenario.initializer:  # what get_state() sees without one is not the pool's
        return _ordinary(run, n, mine)
    future = run.pool.submit(jobs.get_state)
    mine.append(run.track(future, "initializer", value(run.token)))


# --- maps: each checked where it is consumed ---------------------------------------------------


def _consume(
    run: Run,
    fault: str,
    iterator: Iterator[Any],
    expected: list[Any],
    bad: Optional[int],
    error: Optional[Callable[[BaseException], bool]],
    first_failing: int = 0,
) -> None:
    """Take the map's results; all must be right up to the bad item, whose error must be
    ``error`` (raised at an index from ``first_failing`` to ``bad``)."""
    got: list[Any] = []
    try:
        for item in iterator:
            got.append(item)
    except RuntimeError as exc:
        if not (run.shut.is_set() and "shutdown" in str(exc)):
            run.problem(f"{fault}: map raised {exc!r} after {len(got)} items")
        return
    except BaseException as exc:
        where = len(got)
        crash = isinstance(exc, WorkerCrashedError) and SECOND_REPLY in run.taints
        if crash or (DESCRIPTORS in run.taints and out_of_descriptors(exc)):
            error, bad, first_failing = (lambda e: True), len(expected), 0
        if error is None or bad is None or not error(exc) or not first_failing <= where <= bad:
            if not (run.shut.is_set() and isinstance(exc, (JobKilledError, CancelledError))):
                run.problem(f"{fault}: map raised {exc!r} at item {where} (bad item: {bad})")
        elif got != expected[:where]:
            run.problem(f"{fault}: map's items before the bad one are wrong")
        return
    finally:
        with run.lock:
            run.figures.map_items += len(got)
    if bad is not None and not run.shut.is_set():
        run.problem(f"{fault}: map of {len(expected)} items did not fail at item {bad}")
    elif got != expected and not run.shut.is_set():
        run.problem(f"{fault}: map gave {reprlib_repr(got)}, expected {reprlib_repr(expected)}")


@step("map")
def _map(run: Run, n: int, mine: list[Tracked]) -> None:
    items = list(range(3 + 4 * n))
    chunk = None if n % 2 else 1 + n % 3
    iterator = run.pool.map(jobs.square, items, chunksize=chunk, timeout=WAIT)
    _consume(run, "map", iterator, [x * x for x in items], None, None)


@step("map-bad-item")
def _map_bad_item(run: Run, n: int, mine: list[Tracked]) -> None:
    """One item raises, or (processes) returns what cannot be pickled or loaded: every item
    before it is right, and it fails at its own turn. (On threads nothing is pickled: a lock
    or an unloadable object is a result like any other; those steps cover it.)"""
    size, bad = 6 + n, n % 5
    items = list(range(size))
    expected = [x * x for x in items]
    fn: Callable[..., Any]
    error: Callable[[BaseException], bool]
    if n % 3 == 0 or not run.process:
        fn, error = cj.raise_at, lambda e: isinstance(e, ValueError)
    elif n % 3 == 1:
        fn, error = jobs.lock_at, lambda e: isinstance(e, SerializationError)
        expected = items
    else:
        fn, error = cj.unloadable_item, lambda e: isinstance(e, ResultLoadError)
    iterator = run.pool.map(fn, items, [bad] * size, chunksize=1 + n % 4, timeout=WAIT)
    _consume(run, "map-bad-item", iterator, expected, bad, error, first_failing=bad)


@step("map-crash", process_only=True)
def _map_crash(run: Run, n: int, mine: list[Tracked]) -> None:
    """An item ends its worker: the chunk it is in fails from its first item on."""
    size, bad, chunk = 6 + n, n % 5, 1 + n % 3
    items = list(range(size))
    iterator = run.pool.map(cj.crash_at, items, [bad] * size, chunksize=chunk, timeout=WAIT)
    start = bad - bad % chunk
    error = lambda e: isinstance(e, WorkerCrashedError) and e.exitcode == 9  # noqa: E731
    _consume(run, "map-crash", iterator, [x * x for x in items], bad, error, first_failing=start)


@step("map-past-limit")
def _map_past_limit(run: Run, n: int, mine: list[Tracked]) -> None:
    """One item hangs past its time limit (the limit is per item)."""
    size, bad = 4 + n, n % 4
    items = list(range(size))
    tags = [run.tag()] * size
    limited = run.pool.options(timeout=TIME_LIMIT)
    iterator = limited.map(
        cj.held_at, items, [bad] * size, [run.tether.address] * size, tags, timeout=WAIT
    )
    error = lambda e: isinstance(e, JobTimeoutError)  # noqa: E731
    _consume(run, "map-past-limit", iterator, [x * x for x in items], bad, error, bad)


@step("map-abandoned")
def _map_abandoned(run: Run, n: int, mine: list[Tracked]) -> None:
    """The caller takes a few results and drops the rest of the map."""
    iterator = run.pool.map(jobs.square, range(40), chunksize=1 + n % 3, timeout=WAIT)
    count = 2 + n % 3
    expected = [x * x for x in range(count)]
    _consume(run, "map-abandoned", _first(iterator, count), expected, None, None)


def _first(iterator: Iterator[Any], count: int) -> Iterator[Any]:
    try:
        for _ in range(count):
            yield next(iterator)
    finally:
        iterator.close()  # type: ignore[attr-defined]


# The steps hypothesis draws from, ordinary first (what it shrinks towards); ordinary jobs are
# drawn more often than any one fault.
def faults_for(backend: str) -> list[str]:
    names = [name for name in STEPS if backend != "thread" or name not in PROCESS_ONLY]
    return ["ordinary", "ordinary", "burst", *[n for n in names if n != "ordinary"]]
