"""Must fail mypy: awaiting run gives the function's return type."""

from __future__ import annotations

from jobpool import Pool


def greet(name: str) -> str:
    return name


async def check(pool: Pool) -> None:
    result = await pool.run(greet, "x")
    count: int = result  # E: assignment
    print(count)
