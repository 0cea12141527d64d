"""Must fail mypy: map, starmap and amap yield the function's return type."""

from __future__ import annotations

from collections.abc import Iterator

from jobpool import Pool


def square(x: int) -> int:
    return x * x


def check(pool: Pool) -> None:
    results = pool.map(square, [1, 2])
    texts: Iterator[str] = results  # E: assignment
    print(texts)
    first: str = next(pool.starmap(square, [(1,)]))  # E: assignment
    print(first)


async def check_async(pool: Pool) -> None:
    async for value in pool.amap(square, [1, 2]):
        value.upper()  # E: attr-defined
