"""A function travels to each worker once, a changed one again, and never a stale copy.

The closures here hold a large bytes or str value (sent out of line, once per worker) and a small
mutable dict. Each copy of the function that a worker unpickles starts with ``seen`` False, so
the sum of the ``fresh`` flags the jobs return counts how many copies were shipped.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import pytest

import jobs
from conftest import PROCESS_BACKENDS, WAIT, MakePool
from jobpool import SerializationError
from jobpool._process import _blobs
from jobpool._process._blobs import BLOB_MIN_SIZE, BlobTable, dumps_function, loads_function

BIG = 4 * BLOB_MIN_SIZE


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def big_closure(payload: Any) -> Callable[[int], tuple[int, bool]]:
    state = {"seen": False}

    def job(x: int) -> tuple[int, bool]:
        fresh = not state["seen"]
        state["seen"] = True
        return len(payload) + x, fresh

    return job


@pytest.mark.parametrize("payload", [bytes(BIG), "x" * BIG], ids=["bytes", "str"])
def test_a_big_closure_is_shipped_once_per_worker(
    make_pool: MakePool, process_backend: str, payload: Any
) -> None:
    pool = make_pool(process_backend, workers=2)
    job = big_closure(payload)
    results = [f.result(WAIT) for f in [pool.submit(job, i) for i in range(30)]]
    assert [value for value, _ in results] == [BIG + i for i in range(30)]
    # map sends the same function: a worker that got it for a submit already holds it. (One
    # worker may have run all 30 submits while the other was still starting.)
    results += list(pool.map(job, range(20), timeout=WAIT))
    assert 1 <= sum(fresh for _, fresh in results) <= 2


def test_a_changed_function_is_shipped_again(make_pool: MakePool, process_backend: str) -> None:
    pool = make_pool(process_backend, workers=1)
    settings = {"factor": 2}
    big = bytes(BIG)

    def scale(x: int) -> int:
        return len(big) * 0 + x * settings["factor"]

    assert pool.submit(scale, 5).result(WAIT) == 10
    settings["factor"] = 3  # mutated in place: the same function object now pickles differently
    assert pool.submit(scale, 5).result(WAIT) == 15
    assert list(pool.map(scale, [1, 2], timeout=WAIT)) == [3, 6]
    settings["factor"] = 4
    assert list(pool.map(scale, [1, 2], timeout=WAIT)) == [4, 8]


def test_many_distinct_blobs_never_mix_and_workers_keep_a_bounded_number(
    make_pool: MakePool, process_backend: str
) -> None:
    pool = make_pool(process_backend, workers=2)
    count = _blobs.MAX_BLOBS + 8  # more than a worker keeps: the oldest are forgotten
    closures = [big_closure(bytes([i]) * (BIG + i)) for i in range(count)]
    for _ in range(2):  # the second round re-sends what the workers forgot
        futures = [pool.submit(job, 0) for job in closures]
        assert [f.result(WAIT)[0] for f in futures] == [BIG + i for i in range(count)]
    held = [f.result(WAIT) for f in [pool.submit(jobs.held_blob_count) for _ in range(8)]]
    assert max(held) <= _blobs.MAX_BLOBS


def test_unpicklable_big_closure_is_named_at_submit(make_pool: MakePool) -> None:
    pool = make_pool("process-forkserver")
    big = bytes(BIG)
    lock = jobs.Unpicklable()

    def job() -> int:
        return len(big) + len(str(lock))

    with pytest.raises(SerializationError) as info:
        pool.submit(job)
    assert info.value.path == "fn.<closure lock>.conn"
    assert pool.submit(jobs.square, 4).result(WAIT) == 16  # nothing was lost


def test_blob_pickles_name_big_values_and_load_back() -> None:
    table = BlobTable()
    payload = b"\x01" * BIG
    job = big_closure(payload)
    data, blobs = dumps_function(job, table)
    assert len(data) < BLOB_MIN_SIZE  # the bulk is out of line
    assert [value for _, value in blobs] == [payload]
    again, blobs_again = dumps_function(job, table)
    assert again == data and blobs_again == blobs  # same function, same bytes: same key
    copy = loads_function(data, dict(blobs))
    assert copy(1) == (BIG + 1, True)
    small, none = dumps_function(jobs.square, table)
    assert none == () and pickle.loads(small) is jobs.square


def test_blob_table_is_bounded_by_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    table = BlobTable()
    values = [bytes([i]) * 10 for i in range(_blobs.MAX_BLOBS + 5)]
    keys = [table.key(v) for v in values]
    assert len(set(keys)) == len(values)
    assert len(table._held) == _blobs.MAX_BLOBS
    assert table.key(values[-1]) == keys[-1]  # still held: same key
    assert table.key(values[0]) != keys[0]  # forgotten: a new key, sent again
    monkeypatch.setattr(_blobs, "MAX_BLOB_BYTES", 25)
    table.key(b"a" * 20)
    table.key(b"b" * 20)
    assert list(table._held.values()) == [b"b" * 20] and table._held_bytes == 20
