"""The same code on threads and on processes: only the ``backend`` argument changes.

Waiting (network, disk, ``time.sleep``) releases the GIL, so threads overlap it cheaply. Pure
Python computing holds the GIL, so only processes run it in parallel. Both pools return the same
results in the same order.

Run: python examples/swap_backends.py
"""

from __future__ import annotations

import os
import time

from jobpool import Pool


def wait_a_bit(seconds: float) -> float:
    time.sleep(seconds)  # the GIL is released while sleeping
    return seconds


def crunch(n: int) -> int:
    total = 0
    for i in range(n):  # pure Python: holds the GIL the whole time
        total += i * i % 7
    return total


def run(backend: str, fn, items: list) -> tuple[list, float]:
    start = time.perf_counter()
    with Pool(4, backend=backend) as pool:
        results = list(pool.map(fn, items, chunksize=1))
    return results, time.perf_counter() - start


def main() -> None:
    print(f"{os.cpu_count()} CPU(s)")
    for title, fn, items in (
        ("16 waits of 50 ms", wait_a_bit, [0.05] * 16),
        ("4 pure-Python loops", crunch, [800_000] * 4),
    ):
        start = time.perf_counter()
        expected = [fn(x) for x in items]
        serial = time.perf_counter() - start
        line = f"{title:<22} serial {serial:5.2f} s"
        for backend in ("thread", "process"):
            results, elapsed = run(backend, fn, items)
            assert results == expected, backend  # same answers, same order
            line += f" | {backend} {elapsed:5.2f} s"
        print(line)


if __name__ == "__main__":
    main()
