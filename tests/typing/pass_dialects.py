"""Must pass mypy --strict: the stdlib's import lines with ``jobpool.`` in front, typed."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Iterator

from typing_extensions import assert_type

from jobpool.concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from jobpool.concurrent.futures.process import ProcessPoolExecutor as ProcessPoolExecutor2
from jobpool.multiprocessing.dummy import Pool as DummyPool
from jobpool.multiprocessing.pool import AsyncResult, Pool, ThreadPool


def to_text(x: int) -> str:
    return str(x)


def check() -> None:
    with ProcessPoolExecutor(max_workers=2, max_tasks_per_child=10) as executor:
        assert_type(executor.submit(to_text, 1), Future[str])
        assert_type(executor.map(to_text, [1, 2], timeout=1, chunksize=2), Iterator[str])
        for future in as_completed([executor.submit(to_text, 2)]):
            print(future.result())
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="io") as threads:
        assert_type(threads.map(to_text, [1], buffersize=4), Iterator[str])
    assert_type(ProcessPoolExecutor2(1), ProcessPoolExecutor)
    with Pool(2) as pool:
        assert_type(pool.apply_async(to_text, (1,)), AsyncResult[str])
    assert_type(DummyPool(2), ThreadPool)
