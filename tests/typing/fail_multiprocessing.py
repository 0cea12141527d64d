"""Must fail mypy: jobpool.multiprocessing's results are typed by what the function returns."""

from __future__ import annotations

from jobpool.multiprocessing import Pool


def square(x: int) -> int:
    return x * x


def check(pool: Pool) -> None:
    text: str = pool.apply(square, (1,))  # E: assignment
    texts: list[str] = pool.map(square, [1, 2])  # E: arg-type
    pool.imap(square, ["a"])  # E: arg-type
    pool.apply_async(square, (1,)).get().upper()  # E: attr-defined
    print(text, texts)
