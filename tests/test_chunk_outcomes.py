"""Each item of a map chunk has its own outcome, even when its result cannot travel.

A worker runs a chunk of a ``map`` in one go and sends the results back together. An item
whose result cannot be pickled in the worker (a lock), or cannot be loaded in the caller (its
class's module exists only in the worker, or rebuilding it raises), fails alone, with an error
that says so; the other items of its chunk keep their values. Covered on every start method,
through shared memory, on Dask, for ``map``, ``amap`` and jobpool.multiprocessing; the
salvaging unpickler that finds the failed parts is tested on its own at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import pickle
import sys
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobpool.multiprocessing as jmp
import jobs
from conftest import START_METHODS, WAIT
from jobpool import Pool, ResultLoadError, SerializationError
from jobpool._salvage import Failed, salvage

MakePool = Callable[..., Pool]
PROCESS_BACKENDS = [f"process-{m}" for m in START_METHODS]
N = 1000
BAD = 500

# How the item at BAD fails: the function, the error it gets, and what that error says.
LOCK = functools.partial(jobs.lock_at, bad=BAD)
WORKER_ONLY = functools.partial(jobs.unloadable_at, bad=BAD, how="module")
REBUILD_FAILS = functools.partial(jobs.unloadable_at, bad=BAD, how="rebuild")
CASES = {
    "lock": (LOCK, SerializationError, "it holds a '_thread.lock' object (TypeError: "),
    "worker-only module": (
        WORKER_ONLY,
        ResultLoadError,
        f"importing {jobs.WORKER_ONLY_MODULE}.Thing raised ModuleNotFoundError",
    ),
    "rebuild fails": (
        REBUILD_FAILS,
        ResultLoadError,
        "calling jobs._refuse_to_rebuild raised RuntimeError: refusing to rebuild 500 here",
    ),
}


def outcomes(next_item: Callable[[], Any]) -> list[Any]:
    """Every item of a resumable iterator: its value, or the exception it raised."""
    out: list[Any] = []
    while True:
        try:
            out.append(next_item())
        except StopIteration:
            return out
        except Exception as exc:
            out.append(exc)


def within_deadline(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` for a call that takes no timeout (multiprocessing's ``map``): made in
    a thread, and waited for at most WAIT seconds."""
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(call(*args))
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()  # a daemon: a hang fails, not blocks
    return outcome.result(WAIT)


def check_error(
    error: BaseException, kind: type[BaseException], words: str, path: str = "the item's result"
) -> None:
    """``error`` is the bad item's own, naming ``path`` and saying ``words``."""
    assert type(error) is kind, repr(error)
    assert isinstance(error, SerializationError) and error.path == path
    if isinstance(error, ResultLoadError):
        assert str(error).startswith(f"cannot load {path} in the caller: {words}"), str(error)
        assert error.type_name in (f"{jobs.WORKER_ONLY_MODULE}.Thing", "jobs._refuse_to_rebuild")
        assert isinstance(error.__cause__, (ModuleNotFoundError, RuntimeError))
    else:
        assert str(error).startswith(f"cannot serialize {path}: {words}"), str(error)


def check_items(got: list[Any], kind: type[BaseException], words: str) -> None:
    """Every item but BAD has its value; BAD has its own error."""
    assert len(got) == N
    check_error(got[BAD], kind, words)
    assert got[:BAD] + got[BAD + 1 :] == [i for i in range(N) if i != BAD]


# --- Pool.map, on every start method --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_map_yields_every_item_before_the_bad_one_then_its_own_error(
    make_pool: MakePool, backend: str, case: str
) -> None:
    fn, kind, words = CASES[case]
    pool = make_pool(backend)
    for chunksize in (None, 1000):
        results = pool.map(fn, range(N), chunksize=chunksize, timeout=WAIT)
        got = [next(results) for _ in range(BAD)]
        assert got == list(range(BAD))
        with pytest.raises(kind) as info:
            next(results)
        check_error(info.value, kind, words)
    # The pool goes on, and so does a map with on_error, which skips only the bad item.
    errors: list[BaseException] = []
    assert list(pool.map(fn, range(N), on_error=errors.append, timeout=WAIT)) == [
        i for i in range(N) if i != BAD
    ]
    assert len(errors) == 1
    check_error(errors[0], kind, words)


def test_on_threads_the_same_items_are_results(make_pool: MakePool) -> None:
    """Threads pickle nothing: the lock and the worker-only object come back as they are."""
    pool = make_pool("thread")
    got = list(pool.map(LOCK, range(N), timeout=WAIT))
    assert isinstance(got[BAD], type(threading.Lock()))
    assert got[:BAD] == list(range(BAD))
    try:
        assert type(pool.submit(WORKER_ONLY, BAD).result(WAIT)).__name__ == "Thing"
    finally:  # made in this process by the thread: the other tests need it to be the worker's
        sys.modules.pop(jobs.WORKER_ONLY_MODULE)


@pytest.fixture(autouse=True)
def worker_only_module_not_here() -> Iterator[None]:
    assert jobs.WORKER_ONLY_MODULE not in sys.modules
    yield


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_several_bad_items_of_one_chunk_each_fail_alone(make_pool: MakePool, backend: str) -> None:
    """One chunk holding an item that raised, one that cannot be pickled, one whose class is
    only in the worker and one that cannot be rebuilt: four errors, each its own."""

    def f(x: int) -> Any:
        if x == 3:
            raise ValueError("item 3 raised")
        if x == 5:
            return threading.Lock()
        if x == 7:
            return jobs.worker_only_object(x)
        if x == 9:
            return jobs.RebuildFails(x)
        return x

    pool = make_pool(backend)
    with jmp.Pool(2, context=backend.split("-", 1)[1]) as mp_pool:
        iterator = mp_pool.imap(f, range(12), chunksize=12)
        got = outcomes(functools.partial(iterator.next, WAIT))
    errors = {i: type(v) for i, v in enumerate(got) if isinstance(v, BaseException)}
    assert errors == {
        3: ValueError,
        5: SerializationError,
        7: ResultLoadError,
        9: ResultLoadError,
    }
    assert [v for i, v in enumerate(got) if i not in errors] == [0, 1, 2, 4, 6, 8, 10, 11]
    with pytest.raises(ValueError, match="item 3 raised"):
        list(pool.map(f, range(12), chunksize=12, timeout=WAIT))


# --- jobpool.multiprocessing ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", START_METHODS)
def test_multiprocessing_imap_fails_only_the_bad_item(method: str, case: str) -> None:
    """imap and imap_unordered raise the bad item's own error at its turn and go on; map,
    starmap and map_async raise it as the first error, after every item ran."""
    fn, kind, words = CASES[case]
    with jmp.Pool(2, context=method) as pool:
        for chunksize in (None, 256, N):
            iterator = pool.imap(fn, range(N), chunksize)
            check_items(outcomes(functools.partial(iterator.next, WAIT)), kind, words)
        unordered = pool.imap_unordered(fn, range(N), 256)
        got = outcomes(functools.partial(unordered.next, WAIT))
        errors = [v for v in got if isinstance(v, BaseException)]
        assert len(errors) == 1
        check_error(errors[0], kind, words)
        assert sorted(v for v in got if not isinstance(v, BaseException)) == [
            i for i in range(N) if i != BAD
        ]
        with pytest.raises(kind) as info:
            within_deadline(pool.map, fn, range(N))
        check_error(info.value, kind, words)
        with pytest.raises(kind):
            within_deadline(pool.starmap, fn, [(i,) for i in range(N)])
        seen: list[BaseException] = []
        result = pool.map_async(fn, range(N), error_callback=seen.append)
        result.wait(WAIT)
        assert result.ready() and not result.successful()
        with pytest.raises(kind):
            result.get(WAIT)
        assert len(seen) == 1
        check_error(seen[0], kind, words)
        # The items around the bad one are all there for a map that has no bad one.
        good = [i for i in range(N) if i != BAD]
        assert within_deadline(pool.map, fn, good) == good


# --- asyncio --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_amap_raises_only_at_the_bad_item(make_pool: MakePool, case: str) -> None:
    fn, kind, words = CASES[case]
    pool = make_pool("process-forkserver")

    async def until_error() -> tuple[list[Any], BaseException]:
        got: list[Any] = []
        try:
            async for value in pool.amap(fn, range(N)):
                got.append(value)
        except Exception as exc:
            return got, exc
        raise AssertionError("no item failed")

    async def skipping() -> tuple[list[Any], list[BaseException]]:
        errors: list[BaseException] = []
        got = [value async for value in pool.amap(fn, range(N), on_error=errors.append)]
        return got, errors

    got, error = asyncio.run(asyncio.wait_for(until_error(), WAIT))
    assert got == list(range(BAD))
    check_error(error, kind, words)
    got, errors = asyncio.run(asyncio.wait_for(skipping(), WAIT))
    assert got == [i for i in range(N) if i != BAD]
    assert len(errors) == 1
    check_error(errors[0], kind, words)


# --- through shared memory ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["process-forkserver", "process-fork"])
def test_results_through_shared_memory_keep_their_own_outcomes(
    make_pool: MakePool, backend: str, case: str
) -> None:
    """Results holding large buffers come back through a shared-memory segment: a bad item
    among them fails alone, and the others keep their buffers."""
    fn, kind, words = CASES[case]
    pool = make_pool(backend, shared_memory_threshold=1024)
    big = functools.partial(jobs.with_large_buffer, fn, size=4096)
    items = list(range(BAD - 20, BAD + 20))
    results = pool.map(big, items, chunksize=len(items), timeout=WAIT)
    taken = [next(results) for _ in range(20)]
    with pytest.raises(kind) as info:
        next(results)
    check_error(info.value, kind, words, path="the item's result[0]")
    assert [value for value, _ in taken] == items[:20]
    assert all(buffer == jobs.bytes_of(4096) for _, buffer in taken)
    errors: list[BaseException] = []
    rest = list(pool.map(big, items, chunksize=len(items), on_error=errors.append, timeout=WAIT))
    assert [value for value, _ in rest] == [i for i in items if i != BAD]
    assert len(errors) == 1
    check_error(errors[0], kind, words, path="the item's result[0]")
    if kind is ResultLoadError:  # a single job's result through shared memory
        with pytest.raises(ResultLoadError) as single:
            pool.submit(big, BAD).result(WAIT)
        check_error(single.value, kind, words, path="the job's result[0]")


# --- the salvaging unpickler ----------------------------------------------------------------------


def salvaged(value: Any) -> tuple[Any, Callable[[Any], Any]]:
    """``value`` pickled and loaded again part by part: the loaded value, and its failed part
    finder (the part and its path, or None)."""
    loaded, failed_in = salvage(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    return loaded, lambda part: failed_in(part, "")


def test_a_part_shared_with_a_failed_one_still_loads() -> None:
    shared = [1, 2]
    loaded, failed = salvaged([jobs.RebuildFails(shared), shared, (shared, jobs.Valued(3))])
    part, path = failed(loaded[0])
    assert isinstance(part, Failed) and path == ""
    assert part.name == "jobs._refuse_to_rebuild" and type(part.error) is RuntimeError
    assert loaded[1] == [1, 2] and failed(loaded[1]) is None
    assert loaded[2] == ([1, 2], jobs.Valued(3)) and loaded[2][0] is loaded[1]


def test_an_object_whose_state_cannot_be_set_fails_wherever_it_is_used() -> None:
    refused = jobs.StateRefused(1)
    loaded, failed = salvaged([refused, {"again": refused}, 3])
    part, _ = failed(loaded[0])
    assert part.step == "setting the state of a 'jobs.StateRefused' object"
    assert failed(loaded[1]) == (part, "['again']")
    assert loaded[2] == 3


def test_containers_of_the_objects_own_kind_and_keys() -> None:
    bad = jobs.RebuildFails(0)
    loaded, failed = salvaged(
        [jobs.Items([1, bad]), jobs.Items([1, 2]), {bad: 1}, {1, bad}, frozenset([2, bad]), 5]
    )
    assert failed(loaded[0]) is not None
    assert loaded[1] == [1, 2] and type(loaded[1]) is jobs.Items and failed(loaded[1]) is None
    assert failed(loaded[2])[1].startswith(" (the key ")
    assert failed(loaded[3]) is not None and failed(loaded[4]) is not None
    assert loaded[5] == 5


def test_a_cycle_through_a_failed_part() -> None:
    cycle: list[Any] = [jobs.RebuildFails(0)]
    cycle.append(cycle)
    loaded, failed = salvaged([cycle, 1])
    assert failed(loaded[0])[1] == "[0]"
    assert loaded[1] == 1


LEAVES = st.one_of(
    st.integers(), st.text(max_size=3), st.none(), st.builds(jobs.Valued, st.integers())
)
BAD_LEAVES = st.one_of(
    st.builds(jobs.RebuildFails, st.integers()), st.builds(jobs.StateRefused, st.integers())
)
PARTS = st.recursive(
    st.one_of(LEAVES, BAD_LEAVES),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=2), inner, max_size=3),
        st.builds(jobs.Valued, inner),
    ),
    max_leaves=12,
)


def holds_bad(value: Any) -> bool:
    if isinstance(value, (jobs.RebuildFails, jobs.StateRefused)):
        return True
    if isinstance(value, (list, tuple)):
        return any(holds_bad(item) for item in value)
    if isinstance(value, dict):
        return any(holds_bad(item) for item in value.values())
    if isinstance(value, jobs.Valued):
        return holds_bad(value.value)
    return False


@settings(max_examples=200, deadline=None)
@given(st.lists(PARTS, max_size=6))
def test_exactly_the_items_holding_a_failed_part_fail(items: list[Any]) -> None:
    """Each item loads as pickle.loads would load it, unless it holds a part that cannot be
    loaded: then, and only then, a failed part is found in it."""
    loaded, failed = salvaged(items)
    assert len(loaded) == len(items)
    for original, item in zip(items, loaded):
        if holds_bad(original):
            assert failed(item) is not None
        else:
            assert failed(item) is None
            assert item == original
