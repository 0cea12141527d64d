"""Futures as arguments (issue 26): a job runs once the futures among its arguments are done,
with their values in their places, on every backend.

A job that waits for its inputs holds no worker: the tests hold the input at a ``StartGate``
and watch the other worker run other jobs. Inputs that fail, are cancelled or killed fail their
dependents with ``DependencyError`` naming the argument, and those never run (``jobs.mark_run``
leaves a file for each job that ran). The hypothesis test at the end submits random DAGs of
jobs over two pools with ``max_pending=1``, each under a deadline: none may deadlock.
"""

from __future__ import annotations

import collections
import gc
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobs
from conftest import (
    BACKENDS,
    PROCESS_BACKENDS,
    WAIT,
    join_or_fail,
    wait_blocked_in,
    wait_until,
    within,
)
from jobpool import (
    DependencyError,
    InitializerError,
    JobKilledError,
    Pool,
    QueueFull,
    SerializationError,
)
from jobpool._arguments import MAX_DEPTH

MakePool = Callable[..., Pool]
EVERY = [*BACKENDS, "dask"]  # thread, process (forkserver, fork) and the run's Dask cluster


@pytest.fixture(params=EVERY)
def every(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def dependency_error(future: Future[Any]) -> DependencyError:
    error = future.exception(timeout=WAIT)
    assert isinstance(error, DependencyError), repr(error)
    return error


# --- results flow --------------------------------------------------------------------------------


def test_a_chain_hands_each_result_to_the_next(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 2)
    future = pool.submit(jobs.square, 2)
    for _ in range(20):
        future = pool.submit(jobs.add, future, 1)
    assert future.result(WAIT) == 24


@pytest.mark.parametrize("backend", [b for b in PROCESS_BACKENDS if b not in BACKENDS])
def test_a_chain_under_the_other_start_methods(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, 2)
    future = pool.submit(jobs.square, 2)
    for _ in range(5):
        future = pool.submit(jobs.add, future, b=future)
    assert future.result(WAIT) == 4 * 2**5


def test_a_diamond(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 2)
    top = pool.submit(jobs.square, 3)  # 9
    left = pool.submit(jobs.add, top, 1)  # 10
    right = pool.submit(jobs.add, 2, b=top)  # 11
    bottom = pool.submit(jobs.add_all, left, right, top)  # 1 + 10 + 11 + 9
    assert bottom.result(WAIT) == 31
    assert pool.options(timeout=WAIT).submit(jobs.add, bottom, b=top).result(WAIT) == 40


def test_futures_inside_containers(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 2)
    one, two = pool.submit(jobs.identity, 1), pool.submit(jobs.identity, 2)
    value = [one, (two, {"k": one}), {two, 5}, frozenset({one})]
    got = pool.submit(jobs.identity, value).result(WAIT)
    assert got == [1, (2, {"k": 1}), {2, 5}, frozenset({1})]
    assert value[0] is one and value[1][0] is two  # the caller's containers are left alone
    assert pool.submit(jobs.echo_kwargs, key=[two]).result(WAIT) == ((), {"key": [2]})


def test_how_deep_futures_are_found(make_pool: MakePool) -> None:
    """MAX_DEPTH containers deep; deeper, and inside a subclass of a container, the future
    itself is the argument (threads share objects, so the job sees it)."""
    pool = make_pool("thread", 2)
    one = pool.submit(jobs.identity, 1)
    one.result(WAIT)
    deepest: Any = one
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    assert jobs.nested_sum(pool.submit(jobs.identity, deepest).result(WAIT)) == 1
    too_deep = pool.submit(jobs.identity, [deepest]).result(WAIT)
    for _ in range(MAX_DEPTH + 1):
        too_deep = too_deep[0]
    assert too_deep is one
    Pair = collections.namedtuple("Pair", "a b")
    assert pool.submit(jobs.identity, Pair(one, 2)).result(WAIT).a is one


def test_any_kind_of_future_counts(make_pool: MakePool, every: str) -> None:
    class MyFuture(Future):  # type: ignore[type-arg]
        pass

    pool = make_pool(every, 2)
    mine, subclass = Future(), MyFuture()  # type: ignore[var-annotated]
    with ThreadPoolExecutor(1) as executor:
        other = executor.submit(jobs.square, 4)
        waiting = pool.submit(jobs.add_all, mine, subclass, other)
        mine.set_result(10)
        subclass.set_result(20)
        assert waiting.result(WAIT) == 1 + 10 + 20 + 16


def test_map_starmap_and_run_take_futures(make_pool: MakePool, every: str) -> None:
    import asyncio

    pool = make_pool(every, 2)
    inputs = [pool.submit(jobs.square, i) for i in range(12)]
    assert list(pool.map(jobs.add, inputs, range(12), timeout=WAIT)) == [
        i * i + i for i in range(12)
    ]
    assert list(pool.map(jobs.identity, inputs, chunksize=5, timeout=WAIT)) == [
        i * i for i in range(12)
    ]
    pairs = [(f, f) for f in inputs[:4]]
    assert list(pool.starmap(jobs.add, pairs, timeout=WAIT)) == [0, 2, 8, 18]
    assert list(pool.options(priority=3).map(jobs.identity, inputs[:3], timeout=WAIT)) == [0, 1, 4]

    async def main() -> tuple[Any, list[Any]]:
        one = await pool.run(jobs.add, inputs[3], 1)
        many = [r async for r in pool.amap(jobs.add, inputs, inputs)]
        return one, many

    assert asyncio.run(main()) == (10, [2 * i * i for i in range(12)])


# --- waiting holds no worker ---------------------------------------------------------------------


def test_a_job_waiting_for_its_input_holds_no_worker(
    make_pool: MakePool, every: str, gate: jobs.StartGate
) -> None:
    """Two workers, ten jobs waiting on one slow input: the other worker keeps running."""
    pool = make_pool(every, 2)
    slow = pool.submit(jobs.gate_then_value, gate.address, "slow", 5)
    gate.wait_for("slow")
    waiting = [pool.submit(jobs.add, slow, i) for i in range(10)]
    independent = [pool.submit(jobs.square, i) for i in range(20)]
    assert [f.result(WAIT) for f in independent] == [i * i for i in range(20)]
    # And a job that blocks shows it runs beside the slow one: a worker was free.
    other = pool.submit(jobs.gate_then_value, gate.address, "other", "ran")
    gate.wait_for("other")
    stats = pool.stats()
    assert stats.waiting == 10 and stats.pending == 0
    assert not any(f.done() for f in waiting)
    gate.release("other")
    gate.release("slow")
    assert [f.result(WAIT) for f in waiting] == [5 + i for i in range(10)]
    assert other.result(WAIT) == "ran"
    assert pool.stats().waiting == 0


# --- failures -------------------------------------------------------------------------------------


def test_a_failed_input_fails_its_dependents_naming_the_argument(
    make_pool: MakePool, every: str, tmp_path: Any, gate: jobs.StartGate
) -> None:
    pool = make_pool(every, 2)
    ok = pool.submit(jobs.identity, 1)
    bad = pool.submit(jobs.gate_then_raise, gate.address, "bad", "boom")
    run = str(tmp_path)
    dependents = {
        "args[2]": pool.submit(jobs.mark_run, run, "positional", bad),
        "kwargs['result']": pool.submit(jobs.mark_run, run, "keyword", result=bad),
        "args[2][1][2]": pool.submit(jobs.mark_run, run, "nested", [ok, [ok, ok, bad]]),
        "args[2]['x']": pool.submit(jobs.mark_run, run, "dict", {"x": bad, "y": ok}),
    }
    gate.release("bad")
    cause = bad.exception(WAIT)
    assert isinstance(cause, ValueError)
    for path, future in dependents.items():
        error = dependency_error(future)
        assert error.path == path
        assert error.__cause__ is cause
        assert f"input {path} failed with ValueError: boom" in str(error)
    # Submitted after the input failed: it fails at once.
    assert dependency_error(pool.submit(jobs.add, 1, bad)).path == "args[1]"
    assert jobs.runs_in(run) == {}  # no dependent ran
    # A future resolves before its pool counts it: the input's own count may come last.
    wait_until(lambda: pool.stats().failed == 1 + 5, "the input and its 5 dependents counted")
    assert pool.stats().waiting == 0


def test_a_dependent_of_a_dependent_fails_too(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 2)
    bad = pool.submit(jobs.raise_value_error, "boom")
    middle = pool.submit(jobs.add, bad, 1)
    last = pool.submit(jobs.add, 1, middle)
    error = dependency_error(last)
    assert error.path == "args[1]" and isinstance(error.__cause__, DependencyError)
    assert error.__cause__.__cause__ is bad.exception(WAIT)


def test_a_cancelled_input_fails_its_dependents(
    make_pool: MakePool, every: str, tmp_path: Any, gate: jobs.StartGate
) -> None:
    pool = make_pool(every, 1)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    gate.wait_for("blocker")  # the only worker is busy: the input waits in the queue
    queued = pool.submit(jobs.identity, 1)
    dependent = pool.submit(jobs.mark_run, str(tmp_path), "dependent", queued)
    assert queued.cancel()
    error = dependency_error(dependent)
    assert error.path == "args[2]" and isinstance(error.__cause__, CancelledError)
    assert "input args[2] was cancelled" in str(error)
    gate.release("blocker")
    assert blocker.result(WAIT) is None
    assert jobs.runs_in(str(tmp_path)) == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_input_fails_its_dependents(
    make_pool: MakePool, backend: str, tmp_path: Any, gate: jobs.StartGate
) -> None:
    pool = make_pool(backend, 2)
    running = pool.submit(jobs.gate_job, gate.address, "running")
    gate.wait_for("running")
    dependent = pool.submit(jobs.mark_run, str(tmp_path), "dependent", result=running)
    assert pool.kill(running) is True
    error = dependency_error(dependent)
    assert error.path == "kwargs['result']" and isinstance(error.__cause__, JobKilledError)
    assert jobs.runs_in(str(tmp_path)) == {}


def test_a_killed_input_on_dask_fails_its_dependents(
    make_pool: MakePool, tmp_path: Any, gate: jobs.StartGate
) -> None:
    """A running Dask task cannot be killed; one not started can, wherever it waits."""
    pool = make_pool("dask", 1)
    blocker = pool.submit(jobs.gate_job, gate.address, "blocker")
    gate.wait_for("blocker")
    waiting = pool.submit(jobs.identity, 1)
    dependent = pool.submit(jobs.mark_run, str(tmp_path), "dependent", waiting)
    assert pool.kill(waiting) is True
    error = dependency_error(dependent)
    assert isinstance(error.__cause__, (CancelledError, JobKilledError))
    gate.release("blocker")
    assert blocker.result(WAIT) is None
    assert jobs.runs_in(str(tmp_path)) == {}


def test_cancelling_or_killing_a_waiting_job_means_it_never_runs(
    make_pool: MakePool, every: str, tmp_path: Any
) -> None:
    pool = make_pool(every, 2)
    mine: Future[int] = Future()
    cancelled = pool.submit(jobs.mark_run, str(tmp_path), "cancelled", mine)
    killed = pool.submit(jobs.mark_run, str(tmp_path), "killed", mine)
    after = pool.submit(jobs.add, cancelled, 1)
    assert cancelled.cancel() and pool.kill(killed) is True
    assert cancelled.cancelled() and killed.cancelled()
    assert isinstance(dependency_error(after).__cause__, CancelledError)
    mine.set_result(1)
    assert pool.submit(jobs.add, mine, 1).result(WAIT) == 2
    pool.shutdown(wait=True)
    assert jobs.runs_in(str(tmp_path)) == {}
    stats = pool.stats()
    assert stats.cancelled == 2 and stats.waiting == 0


def test_a_map_item_whose_input_failed_fails_alone(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 2)
    bad = pool.submit(jobs.raise_value_error, "boom")
    inputs = [pool.submit(jobs.identity, i) for i in range(6)]
    inputs[3] = bad
    got: list[Any] = []
    errors: list[BaseException] = []
    for value in pool.map(jobs.square, inputs, chunksize=6, timeout=WAIT, on_error=errors.append):
        got.append(value)
    assert got == [0, 1, 4, 16, 25]
    assert len(errors) == 1 and isinstance(errors[0], DependencyError)
    assert errors[0].path == "args[0]" and "this map item's input" in str(errors[0])
    with pytest.raises(DependencyError):
        list(pool.map(jobs.square, [bad] * 3, timeout=WAIT))


def test_an_input_value_that_cannot_travel_fails_its_dependent(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    threads, processes = make_pool("thread", 1), make_pool("process-forkserver", 1)
    lock = threads.submit(jobs.gate_then_value, gate.address, "lock", threading.Lock())
    dependent = processes.submit(jobs.identity, lock)
    gate.release("lock")
    error = dependent.exception(WAIT)
    assert isinstance(error, SerializationError) and "args[0]" in str(error), repr(error)
    # An input done already is an argument like any other: it fails at submit.
    with pytest.raises(SerializationError, match=r"args\[0\]"):
        processes.submit(jobs.identity, lock)


@pytest.mark.parametrize("backend", ["process-forkserver", "dask"])
def test_an_argument_that_cannot_travel_fails_at_submit(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, 1)
    mine: Future[int] = Future()
    with pytest.raises(SerializationError, match=r"args\[1\]"):
        pool.submit(jobs.add, mine, jobs.Unpicklable())
    assert pool.stats().submitted == 0 and pool.stats().waiting == 0
    mine.set_result(1)
    assert pool.submit(jobs.add, mine, 2).result(WAIT) == 3


# --- across pools -------------------------------------------------------------------------------

PAIRS = [
    ("thread", "process-forkserver"),
    ("process-fork", "thread"),
    ("dask", "process-fork"),
    ("thread", "dask"),
]


@pytest.mark.parametrize("first, second", PAIRS)
def test_futures_across_two_pools(make_pool: MakePool, first: str, second: str) -> None:
    a, b = make_pool(first, 2), make_pool(second, 2)
    future = a.submit(jobs.square, 2)
    for step in range(10):
        future = (b if step % 2 == 0 else a).submit(jobs.add, future, 1)
    assert future.result(WAIT) == 14
    pages = [a.submit(jobs.long_text, 100_000 + i) for i in range(4)]  # sent by the feeder
    assert list(b.map(len, pages, timeout=WAIT)) == [100_000 + i for i in range(4)]
    failed = a.submit(jobs.raise_value_error, "boom")
    error = dependency_error(b.submit(jobs.add, 1, b=failed))
    assert error.path == "kwargs['b']" and error.__cause__ is failed.exception(WAIT)


# --- the bounded queue ----------------------------------------------------------------------------


def test_a_job_waiting_for_the_pools_futures_holds_a_queue_slot(
    make_pool: MakePool, every: str, gate: jobs.StartGate
) -> None:
    """So a producer that submits faster than the pool runs is held back, memory bounded."""
    pool = make_pool(every, 1, max_pending=1)
    slow = pool.submit(jobs.gate_then_value, gate.address, "slow", 5)
    gate.wait_for("slow")
    dependent = pool.submit(jobs.add, slow, 1)
    with pytest.raises(QueueFull):
        pool.submit_nowait(jobs.square, 2)
    blocked = threading.Thread(target=lambda: pool.submit(jobs.square, 3), name="blocked")
    blocked.start()
    wait_blocked_in(blocked, "reserve")
    gate.release("slow")
    join_or_fail(blocked)
    assert dependent.result(WAIT) == 6


def test_a_job_waiting_for_an_outside_future_takes_no_slot(make_pool: MakePool, every: str) -> None:
    """Such a future may be resolved only by the thread a full queue would block: the job
    takes no slot, nor does one that waits for it, and nothing deadlocks."""
    pool = make_pool(every, 1, max_pending=1)
    mine: Future[int] = Future()

    def submit_then_resolve() -> list[Any]:
        first = pool.submit(jobs.add, mine, 1)
        second = pool.submit(jobs.add, first, 1)  # waits for an outside future too
        others = [pool.submit(jobs.square, i) for i in range(5)]  # never wait forever
        mine.set_result(1)
        return [f.result(WAIT) for f in [first, second, *others]]

    assert within(submit_then_resolve) == [2, 3, 0, 1, 4, 9, 16]


# --- the pool's lifecycle -----------------------------------------------------------------------


def test_shutdown_waits_for_jobs_waiting_for_their_inputs(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 1)
    mine: Future[int] = Future()
    dependent = pool.submit(jobs.add, mine, 1)
    closing = threading.Thread(target=pool.shutdown, name="shutdown")
    closing.start()
    wait_blocked_in(closing, "wait_settled")
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(jobs.square, 1)
    mine.set_result(1)
    join_or_fail(closing)
    assert dependent.result(0) == 2


def test_shutdown_without_waiting_still_runs_them(make_pool: MakePool, every: str) -> None:
    pool = make_pool(every, 1)
    mine: Future[int] = Future()
    dependent = pool.submit(jobs.add, mine, 1)
    pool.shutdown(wait=False)
    mine.set_result(1)
    assert dependent.result(WAIT) == 2


def test_cancel_futures_and_terminate_cancel_them(make_pool: MakePool, every: str) -> None:
    mine: Future[int] = Future()
    first, second = make_pool(every, 1), make_pool(every, 1)
    cancelled = first.submit(jobs.add, mine, 1)
    terminated = second.submit(jobs.add, mine, 1)
    first.shutdown(wait=True, cancel_futures=True)
    second.terminate()
    assert cancelled.cancelled() and terminated.cancelled()
    mine.set_result(1)


def test_a_pool_dropped_while_jobs_wait_still_runs_them() -> None:
    mine: Future[int] = Future()
    pool = Pool(1)
    dependent = pool.submit(jobs.add, mine, 1)
    del pool
    gc.collect()
    mine.set_result(1)
    assert dependent.result(WAIT) == 2


@pytest.mark.parametrize("backend", ["thread", "process-fork"])
def test_a_pool_that_breaks_fails_the_jobs_waiting_for_inputs(
    make_pool: MakePool, backend: str
) -> None:
    pool = make_pool(backend, 1, initializer=jobs.fail_initializer)
    mine: Future[int] = Future()
    dependent = pool.submit(jobs.add, mine, 1)
    assert isinstance(pool.submit(jobs.square, 1).exception(WAIT), InitializerError)
    assert isinstance(dependent.exception(WAIT), InitializerError)
    mine.set_result(1)


# --- Dask: the pool's own futures are Dask dependencies ---------------------------------------


def test_dask_passes_the_pools_own_futures_as_dependencies(
    make_pool: MakePool, gate: jobs.StartGate
) -> None:
    """The dependent's task depends on its input's task: the value stays on the cluster."""
    pool = make_pool("dask", 2)
    big = pool.submit(jobs.long_text, 2_000_000)
    held = pool.submit(jobs.gate_with_input, gate.address, "held", big)
    gate.wait_for("held")
    client = pool._backend._client  # type: ignore[attr-defined]
    dependencies = client.run_on_scheduler(jobs.dask_dependencies)
    held_keys = [key for key in dependencies if "gate_with_input" in key]
    assert len(held_keys) == 1 and any("long_text" in d for d in dependencies[held_keys[0]])
    gate.release("held")
    assert len(held.result(WAIT)) == 2_000_000


# --- no DAG deadlocks ---------------------------------------------------------------------------


@st.composite
def dags(draw: Any) -> tuple[list[tuple[int, int, list[tuple[str, int]], bool]], int, int]:
    """Nodes in submission order: (pool 0 or 1, how its inputs are passed, its inputs, fails).

    An input is ("job", earlier node) or ("outside", n): a Future the caller resolves only
    after it submitted every node.
    """
    count = draw(st.integers(1, 12))
    outside = draw(st.integers(0, 2))
    nodes = []
    for index in range(count):
        sources = [("job", i) for i in range(index)] + [("outside", i) for i in range(outside)]
        inputs = draw(st.lists(st.sampled_from(sources), max_size=3)) if sources else []
        fails = draw(st.integers(0, 3)) == 0
        nodes.append((draw(st.integers(0, 1)), draw(st.integers(0, 2)), inputs, fails))
    return nodes, draw(st.integers(1, 3)), draw(st.integers(1, 3))


def run_dag(pools: list[Pool], nodes: list[tuple[int, int, list[tuple[str, int]], bool]]) -> None:
    outside: dict[int, Future[int]] = collections.defaultdict(Future)
    futures: list[Future[Any]] = []
    expected: list[Any] = []  # the value, or DependencyError / ValueError
    for pool_index, how, inputs, fails in nodes:
        args = [futures[i] if kind == "job" else outside[i] for kind, i in inputs]
        values = [expected[i] if kind == "job" else 100 + i for kind, i in inputs]
        pool = pools[pool_index]
        if how == 0:
            future = pool.submit(jobs.fail_or_add, fails, *args)
        elif how == 1:
            future = pool.submit(jobs.fail_or_add, fails, values=args)
        else:
            future = pool.submit(jobs.fail_or_add, fails, values=[args])
        futures.append(future)
        if any(isinstance(v, type) for v in values):
            expected.append(DependencyError)
        elif fails:
            expected.append(ValueError)
        else:
            expected.append(1 + jobs.nested_sum(values))
    for i, future in outside.items():
        future.set_result(100 + i)
    for future, want in zip(futures, expected):
        if isinstance(want, type):
            assert isinstance(future.exception(WAIT), want)
        else:
            assert future.result(WAIT) == want


DAG_PAIRS = [("thread", "thread"), ("thread", "process-fork"), ("dask", "thread")]


@pytest.mark.parametrize("first, second", DAG_PAIRS)
def test_no_dag_of_jobs_deadlocks_with_max_pending_1(
    first: str, second: str, request: pytest.FixtureRequest
) -> None:
    from conftest import pool_kwargs

    address = request.getfixturevalue("dask_address") if "dask" in (first, second) else None
    examples = 60 if first == second else 10

    def options(backend: str) -> dict[str, Any]:
        return {"address": address} if backend == "dask" else {}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(dags())
    def check(dag: tuple[list[tuple[int, int, list[tuple[str, int]], bool]], int, int]) -> None:
        nodes, first_workers, second_workers = dag
        pools = [
            Pool(first_workers, max_pending=1, **pool_kwargs(first), **options(first)),
            Pool(second_workers, max_pending=1, **pool_kwargs(second), **options(second)),
        ]
        try:
            within(run_dag, pools, nodes)
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)

    check()


# --- the standard library's dialects ------------------------------------------------------------


def test_the_stdlib_dialects_pass_a_future_as_it_is() -> None:
    """There a job may be the one that resolves the future it is given, as in the stdlib."""
    from jobpool.concurrent.futures import ThreadPoolExecutor
    from jobpool.multiprocessing.dummy import Pool as MpThreadPool

    handed: Future[int] = Future()
    with ThreadPoolExecutor(1) as executor:
        assert executor.submit(handed.set_result, 5).result(WAIT) is None
    assert handed.result(0) == 5
    with MpThreadPool(1) as pool:
        other: Future[int] = Future()
        assert pool.apply_async(jobs.identity, (other,)).get(WAIT) is other
