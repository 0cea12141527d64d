"""Must pass mypy --strict: jobpool.multiprocessing's results carry the function's return type."""

from __future__ import annotations

from typing_extensions import assert_type

from jobpool.multiprocessing import AsyncResult, IMapIterator, MapResult, Pool, ThreadPool


def to_text(x: int) -> str:
    return str(x)


def add(a: int, b: int) -> int:
    return a + b


def check(pool: Pool, threads: ThreadPool) -> None:
    assert_type(pool.apply(add, (1, 2)), int)
    assert_type(pool.apply_async(add, (1, 2)), AsyncResult[int])
    assert_type(pool.apply_async(add, (1, 2)).get(timeout=1), int)
    assert_type(pool.map(to_text, [1, 2]), list[str])
    assert_type(pool.map_async(to_text, [1, 2]), MapResult[str])
    assert_type(pool.map_async(to_text, [1, 2]).get(), list[str])
    assert_type(pool.starmap(add, [(1, 2)]), list[int])
    assert_type(pool.starmap_async(add, [(1, 2)]).get(), list[int])
    assert_type(pool.imap(to_text, [1, 2]), IMapIterator[str])
    assert_type(pool.imap_unordered(to_text, [1, 2]).next(timeout=1), str)
    for text in threads.imap(to_text, range(3), chunksize=2):
        assert_type(text, str)
    pool.apply_async(to_text, (1,), callback=lambda text: print(text.upper()))
    pool.map_async(to_text, [1], callback=lambda texts: print(texts[0].upper()))
    with Pool(2, context="spawn", maxtasksperchild=10, job_timeout=5.0) as other:
        assert_type(other, Pool)
