"""Time limits and kill: a job that runs too long fails with JobTimeoutError, the pool goes on.

The limit counts from when the job starts, not from when it was queued. On the process backend the
worker running the job is killed and replaced. A thread cannot be stopped: on the thread backend
the future fails on time, but the thread runs on until the call returns (its result is dropped).

Run: python examples/timeouts.py
"""

from __future__ import annotations

import time

from jobpool import JobKilledError, JobTimeoutError, Pool


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def main() -> None:
    for backend in ("process", "thread"):
        with Pool(2, backend=backend, job_timeout=0.5) as pool:
            start = time.perf_counter()
            too_slow = pool.submit(sleepy, 3)  # limit: the pool's job_timeout, 0.5 s
            allowed = pool.options(timeout=2).submit(sleepy, 0.8)  # this job gets 2 s
            try:
                too_slow.result()
            except JobTimeoutError as exc:
                print(f"{backend}: {exc} (after {time.perf_counter() - start:.2f} s)")
            print(f"{backend}: the 0.8 s job with its own 2 s limit returned {allowed.result()}")

            running = pool.options(timeout=10).submit(sleepy, 3)
            while not running.running():
                time.sleep(0.01)
            pool.kill(running)
            try:
                running.result()
            except JobKilledError as exc:
                print(f"{backend}: {exc}")
            print(f"{backend}: the pool still works: {pool.submit(sleepy, 0.01).result()}")
            print(f"{backend}: {pool.stats()}")


if __name__ == "__main__":
    main()
