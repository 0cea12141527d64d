"""A worker process that dies fails only the job it was running; the pool replaces it.

Segfaults in C extensions, ``os._exit`` and the out-of-memory killer all end a worker process.
jobpool fails that one job with ``WorkerCrashedError`` (exit code and signal name included),
starts a replacement and keeps the other jobs going. ``max_jobs_per_worker`` replaces workers on
purpose, for libraries that leak. A failing ``initializer`` breaks the pool with
``InitializerError`` instead of restarting workers forever.

Run: python examples/crash_isolation.py
"""

from __future__ import annotations

import ctypes
import os
import time

from jobpool import InitializerError, Pool, WorkerCrashedError


def work(x: int) -> int:
    time.sleep(0.05)
    return x * x


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, like a buggy C extension


def exit_hard() -> None:
    os._exit(3)  # leaves without raising, like a library calling exit()


def worker_pid(_: object = None) -> int:
    return os.getpid()


def connect_to_database() -> None:
    raise ConnectionError("database unreachable")


def main() -> None:
    print(
        "Two jobs below crash their worker process on purpose. The one that segfaults makes\n"
        "Python print 'Fatal Python error: Segmentation fault' and a traceback on stderr: that\n"
        "dump is expected, and the pool goes on.\n",
        flush=True,
    )
    with Pool(2, backend="process") as pool:
        good = [pool.submit(work, x) for x in range(6)]
        bad = [pool.submit(segfault), pool.submit(exit_hard)]
        print("good jobs:", [f.result() for f in good])
        for future in bad:
            exc = future.exception()
            assert isinstance(exc, WorkerCrashedError)
            print(f"crashed job: {exc} (exitcode={exc.exitcode}, signal={exc.signal})")
        print("still working:", pool.submit(work, 7).result())
        print(pool.stats())

    with Pool(2, backend="process", max_jobs_per_worker=3) as pool:
        pids = set(pool.map(worker_pid, range(12), chunksize=1))
        print(f"max_jobs_per_worker=3: 12 jobs ran in {len(pids)} different worker processes")

    with Pool(2, backend="process", initializer=connect_to_database) as pool:
        try:
            pool.submit(work, 1).result()
        except InitializerError as exc:
            print(f"InitializerError: {exc}")
            print(f"  caused by: {exc.__cause__!r}")


if __name__ == "__main__":
    main()
