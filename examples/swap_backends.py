"""The same code on threads and on processes: only the ``backend`` argument changes.

Both pools return the same results in the same order. What differs is speed: waiting (network,
disk, ``time.sleep``) releases the GIL, so threads overlap it cheaply; pure-Python computing
holds the GIL, so threads take turns, and only processes can run it in parallel, one per CPU
that is free. On a machine busy with other programs there may be no free CPU: the script says
what it measured rather than what should happen (``python -m jobpool demo`` measures around
other load).

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
    """Results and seconds of ``fn`` over ``items`` on a started pool (starting it is not timed:
    a pool is started once and used for many jobs)."""
    with Pool(4, backend=backend) as pool:
        list(pool.map(abs, range(4), chunksize=1))  # start the workers
        start = time.perf_counter()
        results = list(pool.map(fn, items, chunksize=1))
        return results, time.perf_counter() - start


def speed(serial: float, elapsed: float) -> str:
    ratio = serial / elapsed
    if ratio >= 1.2:
        return f"{ratio:.1f} times as fast as one at a time"
    if ratio > 0.8:
        return "about as fast as one at a time"
    return f"slower than one at a time ({ratio:.1f} of its speed)"


def main() -> None:
    print(f"{os.cpu_count()} CPU(s)")
    for title, fn, items in (
        ("16 waits of 50 ms", wait_a_bit, [0.05] * 16),
        ("4 pure-Python loops", crunch, [4_000_000] * 4),
    ):
        start = time.perf_counter()
        expected = [fn(x) for x in items]
        serial = time.perf_counter() - start
        print(f"{title}: one at a time {serial:.2f} s")
        for backend, workers in (("thread", "4 threads"), ("process", "4 processes")):
            results, elapsed = run(backend, fn, items)
            assert results == expected, backend  # same answers, same order
            print(f"  on {workers}: {elapsed:.2f} s, {speed(serial, elapsed)}")


if __name__ == "__main__":
    main()
