"""Lazy, windowed map and starmap: order, completion order, errors, endless input."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

import jobs
from conftest import WAIT, MakePool
from jobpool._map import MAX_CHUNK


class CountingSource:
    """An endless generator that records how many items were pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.pulled += 1
            yield i


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_ordered_map(make_pool: MakePool, backend: str, chunksize: int | None) -> None:
    pool = make_pool(backend)
    assert list(pool.map(jobs.square, range(1000), chunksize=chunksize, timeout=WAIT)) == [
        i * i for i in range(1000)
    ]


@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_unordered_map_yields_every_result(
    make_pool: MakePool, backend: str, chunksize: int | None
) -> None:
    pool = make_pool(backend)
    results = list(
        pool.map(jobs.square, range(500), ordered=False, chunksize=chunksize, timeout=WAIT)
    )
    assert sorted(results) == [i * i for i in range(500)]


def test_unordered_map_yields_in_completion_order(make_pool: MakePool) -> None:
    import threading

    pool = make_pool("thread", workers=2)
    release_slow = threading.Event()

    def job(name: str) -> str:
        if name == "slow":  # cannot finish before the caller has received "fast"
            release_slow.wait(WAIT)
        return name

    results = pool.map(job, ["slow", "fast"], ordered=False, chunksize=1, timeout=WAIT)
    assert next(results) == "fast"
    release_slow.set()
    assert list(results) == ["slow"]


def test_map_zips_several_iterables_like_builtin_map(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    assert list(pool.map(jobs.add, range(5), range(10, 100), timeout=WAIT)) == [10, 12, 14, 16, 18]


def test_starmap(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    pairs = [(i, i + 1) for i in range(50)]
    assert list(pool.starmap(jobs.add, pairs, timeout=WAIT)) == [a + b for a, b in pairs]
    assert sorted(pool.starmap(jobs.add, iter(pairs), ordered=False, timeout=WAIT)) == sorted(
        a + b for a, b in pairs
    )


def test_empty_input(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)
    assert list(pool.map(jobs.square, [], timeout=WAIT)) == []


def test_failing_item_raises_at_its_turn(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend)

    def check(x: int) -> int:
        if x == 5:
            raise ValueError(f"bad item {x}")
        return x

    results = pool.map(check, range(10), chunksize=3, timeout=WAIT)
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad item 5"):
        next(results)
    # As with Executor.map, the error ends the iteration: items after it are not handed out.
    assert list(results) == []


@pytest.mark.parametrize("ordered", [True, False])
def test_close_midway_through_a_chunk_hands_out_nothing_more(
    make_pool: MakePool, backend: str, ordered: bool
) -> None:
    pool = make_pool(backend)
    results = pool.map(jobs.square, range(100), chunksize=50, ordered=ordered, timeout=WAIT)
    first = next(results)
    assert first in (0, 50 * 50)
    results.close()  # type: ignore[attr-defined]
    assert list(results) == []


@pytest.mark.parametrize("chunksize", [None, 1, 4])
def test_results_that_refuse_comparison(
    make_pool: MakePool, backend: str, chunksize: int | None
) -> None:
    """map never compares results (a NumPy array's ``==`` does not give a bool)."""
    pool = make_pool(backend)
    results = pool.map(jobs.make_incomparable, range(20), chunksize=chunksize, timeout=WAIT)
    assert [result.value for result in results] == list(range(20))


@pytest.mark.parametrize("ordered", [True, False])
def test_map_holds_no_result_already_handed_out(
    make_pool: MakePool, backend: str, ordered: bool
) -> None:
    """As ``Executor.map`` promises (bpo-14406): a result the caller has taken and dropped is
    freed, even while the rest of its chunk is still being handed out."""
    import gc
    import weakref

    pool = make_pool(backend)
    for value in pool.map(jobs.make_object, range(10), chunksize=5, ordered=ordered, timeout=WAIT):
        ref = weakref.ref(value)
        del value
        gc.collect()
        assert ref() is None


@pytest.mark.parametrize("ordered", [True, False])
def test_endless_input_is_read_lazily(make_pool: MakePool, backend: str, ordered: bool) -> None:
    pool = make_pool(backend, workers=2)
    source = CountingSource()
    results = pool.map(jobs.identity, source, ordered=ordered, timeout=WAIT)
    taken = list(itertools.islice(results, 3000))
    assert len(taken) == 3000
    if ordered:
        assert taken == list(range(3000))
    # The consumer stalls: let every job already submitted finish, then nothing more is read.
    pulled_when_stalled = source.pulled
    stats = pool.stats()
    deadline = time.monotonic() + WAIT
    while stats.pending or stats.running:  # all in-flight chunks drain on their own
        assert time.monotonic() < deadline, f"in-flight chunks never drained: {stats}"
        pool.submit(jobs.identity, None).result(WAIT)  # a round trip: the pool moved on
        stats = pool.stats()
    assert source.pulled == pulled_when_stalled
    window_items = 2 * pool.workers * MAX_CHUNK  # window chunks x largest adaptive chunk
    assert source.pulled - len(taken) <= window_items
    results.close()  # type: ignore[attr-defined]


def test_big_items_make_small_chunks() -> None:
    from jobpool._map import MAX_CHUNK_BYTES, ChunkSizer

    small = ChunkSizer(None)
    for _ in range(12):
        small.weigh([1])
        small.observe(small.size, 0.0001)
    assert small.size == MAX_CHUNK
    big = ChunkSizer(None)
    item = b"x" * (1 << 20)
    for _ in range(12):
        big.weigh([item])
        big.observe(big.size, 0.0001)
    assert 1 <= big.size * len(item) <= MAX_CHUNK_BYTES
    arguments = ChunkSizer(None)  # starmap/zip items: the tuple's members count
    for _ in range(12):
        arguments.weigh([(item, 1)])
        arguments.observe(arguments.size, 0.0001)
    assert arguments.size == big.size

    class NoSize:
        def __sizeof__(self) -> int:
            raise RuntimeError("no size")

    unknown = ChunkSizer(None)  # an item whose size cannot be read: time alone decides
    for _ in range(12):
        unknown.weigh([NoSize()])
        unknown.observe(unknown.size, 0.0001)
    assert unknown.size == MAX_CHUNK
    chosen = ChunkSizer(64)  # a chunksize the caller chose is kept
    chosen.weigh([item])
    assert chosen.size == 64


def test_read_ahead_of_big_items_stays_small_in_bytes(make_pool: MakePool, backend: str) -> None:
    from jobpool._map import MAX_CHUNK_BYTES

    pool = make_pool(backend, workers=2)
    pulled = 0
    megabyte = 1 << 20

    def big_items() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * megabyte

    results = pool.map(len, big_items(), timeout=WAIT)
    taken = [next(results) for _ in range(40)]
    assert taken == [megabyte] * 40
    window = 2 * pool.workers
    assert (pulled - len(taken)) * megabyte <= window * MAX_CHUNK_BYTES + megabyte
    results.close()  # type: ignore[attr-defined]


def test_buffersize_bounds_read_ahead(make_pool: MakePool, backend: str) -> None:
    pool = make_pool(backend, workers=2)
    source = CountingSource()
    results = pool.map(jobs.identity, source, chunksize=1, buffersize=4, timeout=WAIT)
    assert source.pulled <= 4
    assert [next(results) for _ in range(10)] == list(range(10))
    assert source.pulled <= 10 + 4
    results.close()  # type: ignore[attr-defined]


def test_map_timeout(make_pool: MakePool, gate: jobs.StartGate) -> None:
    import concurrent.futures as cf

    pool = make_pool("thread", workers=1)
    results = pool.starmap(jobs.gate_job, [(gate.address, "held")], timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        next(results)
    gate.release("held")


def test_closing_the_iterator_cancels_pending_chunks(make_pool: MakePool) -> None:
    pool = make_pool("thread", workers=1)
    with jobs.StartGate() as gate:
        items = ((gate.address, f"t{i}", i) for i in itertools.count())
        results = pool.starmap(jobs.gate_job, items, chunksize=1, buffersize=5, timeout=WAIT)
        gate.wait_for("t0")
        gate.release("t0")
        assert next(results) == 0
        gate.wait_for("t1")  # t1 runs on the only worker; t2..t5 are queued behind it
        results.close()  # type: ignore[attr-defined]
        gate.release("t1")
        pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.submitted, stats.done, stats.cancelled) == (6, 2, 4)


def test_adaptive_chunks_grow_on_tiny_items(make_pool: MakePool) -> None:
    pool = make_pool("process-fork", workers=2)
    before = pool.stats().submitted
    assert sum(pool.map(jobs.square, range(100_000), timeout=WAIT)) == sum(
        i * i for i in range(100_000)
    )
    chunks = pool.stats().submitted - before
    assert chunks < 200, f"{chunks} chunks for 100,000 tiny items: chunking did not adapt"
