"""Must fail mypy: submit checks the arguments against the function's signature."""

from __future__ import annotations

from jobpool import Pool


def add(a: int, b: int) -> int:
    return a + b


def check(pool: Pool) -> None:
    pool.submit(add, 1, "2")  # E: arg-type
