"""Must fail mypy: run checks the arguments, positional and keyword, like submit."""

from __future__ import annotations

from jobpool import Pool


def greet(name: str, *, times: int = 1) -> str:
    return name * times


async def check(pool: Pool) -> None:
    await pool.run(greet, "x", times="2")  # E: arg-type
