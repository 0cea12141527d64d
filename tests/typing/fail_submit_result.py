"""Must fail mypy: the future's result has the function's return type."""

from __future__ import annotations

from jobpool import Pool


def add(a: int, b: int) -> int:
    return a + b


def check(pool: Pool) -> None:
    text: str = pool.submit(add, 1, 2).result()  # E: assignment
    print(text)
