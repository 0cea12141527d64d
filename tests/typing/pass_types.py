"""Must pass mypy --strict: the result types of submit, map, starmap, run and amap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

from jobpool import Pool


def to_text(x: int, sep: str = "") -> str:
    return sep + str(x)


def add(a: int, b: int) -> int:
    return a + b


def check(pool: Pool) -> None:
    assert_type(pool.submit(to_text, 1), Future[str])
    assert_type(pool.submit(to_text, 1, sep="-"), Future[str])
    assert_type(pool.submit_nowait(add, 1, 2), Future[int])
    assert_type(pool.options(timeout=1).submit(add, 1, 2), Future[int])
    assert_type(pool.map(to_text, [1, 2]), Iterator[str])
    assert_type(pool.map(add, [1], [2], progress=False, on_result=print), Iterator[int])
    assert_type(pool.starmap(add, [(1, 2)]), Iterator[int])
    assert_type(pool.amap(to_text, [1, 2]), AsyncIterator[str])
    futures = [pool.submit(add, 1, 2)]
    assert_type(pool.as_completed(futures, progress=True), Iterator[Future[int]])


def on_text(value: str) -> None:
    print(value.upper())


def callbacks(pool: Pool) -> None:
    pool.map(to_text, [1], on_result=on_text, on_error=lambda exc: print(exc))


async def check_async(pool: Pool) -> None:
    assert_type(await pool.run(to_text, 1), str)
    assert_type(await pool.run(to_text, 1, sep="-"), str)
    assert_type(await pool.options(timeout=1).run(add, 1, 2), int)
    async for text in pool.amap(to_text, [1, 2], ordered=False):
        assert_type(text, str)
