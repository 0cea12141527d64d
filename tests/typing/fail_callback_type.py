"""Must fail mypy: on_result receives the function's return type (mypy: cannot infer R)."""

from __future__ import annotations

from jobpool import Pool


def square(x: int) -> int:
    return x * x


def shout(text: str) -> None:
    print(text.upper())


def check(pool: Pool) -> None:
    pool.map(square, [1], on_result=shout)  # E: misc
