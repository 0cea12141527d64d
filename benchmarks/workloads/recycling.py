"""Worker recycling: a new worker every 25 jobs, against the standard library's two ways.

jobpool's ``max_jobs_per_worker=25`` against ``ProcessPoolExecutor(max_tasks_per_child=25)``
(Python 3.11+) and ``multiprocessing.Pool(maxtasksperchild=25)``: 2 workers, N trivial jobs
submitted at once, then every result; each pool with its default start method (the executor's is
spawn when it recycles, the stdlib pool's is fork on Linux before 3.14, jobpool's forkserver) and
on forkserver for all three. Every pool is warmed first (all its workers up); the time per job
includes starting the replacements, which is what recycling costs.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent import futures
from typing import Any, Optional

from ..common import WORKERS, Task, row
from ..jobs import inc, sleep_job

NAME = "recycling"
TITLE = "recycling: a new worker every 25 jobs, N trivial jobs inc(x), 2 workers"
COLUMNS = [("us_per_job", "us/job", "{:.1f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
EVERY = 25
JOBPOOL = "jobpool[process] max_jobs_per_worker"
EXECUTOR = "cf.ProcessPoolExecutor max_tasks_per_child"
STDLIB = "mp.Pool maxtasksperchild"
IMPLS = [JOBPOOL, EXECUTOR, STDLIB]
METHODS: tuple[Optional[str], ...] = (None, "forkserver")
REFERENCE = {"process": STDLIB}
# A pool that has not finished a round by then is reported as hung (CPython 3.11's
# ProcessPoolExecutor with max_tasks_per_child can hang: its replacement is never started).
HUNG_SECONDS = 30.0
# The same for the quick (smoke) run, whose rounds of 100 trivial jobs take well under a second:
# the hung executor cost CI a minute at 30 s a start method.
QUICK_HUNG_SECONDS = 5.0


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    hung = QUICK_HUNG_SECONDS if quick else HUNG_SECONDS
    params = {"n": 100 if quick else 1000, "reps": 2 if quick else 3, "every": EVERY, "hung": hung}
    timeout = 2 * hung + 60
    out = []
    for method in METHODS:
        for impl in IMPLS:
            if impl == EXECUTOR and sys.version_info < (3, 11):
                continue  # max_tasks_per_child is new in 3.11
            out.append(Task(NAME, f"{impl} @{method or 'default'}", dict(params), timeout=timeout))
    return out


def _open(impl: str, method: Optional[str], every: int) -> tuple[Any, Any, Any]:
    """(pool, submit(fn, x) -> handle, result(handle) -> value)."""
    if impl == JOBPOOL:
        import jobpool

        pool = jobpool.Pool(
            WORKERS, backend="process", start_method=method, max_jobs_per_worker=every
        )
        return pool, pool.submit, lambda f, timeout=None: f.result(timeout)
    context = multiprocessing.get_context(method) if method else None
    if impl == EXECUTOR:
        executor = futures.ProcessPoolExecutor(
            WORKERS, mp_context=context, max_tasks_per_child=every
        )
        return executor, executor.submit, lambda f, timeout=None: f.result(timeout)
    mp_pool = (context or multiprocessing).Pool(WORKERS, maxtasksperchild=every)
    return (
        mp_pool,
        lambda fn, x: mp_pool.apply_async(fn, (x,)),
        lambda r, timeout=None: r.get(timeout),
    )


def _close(impl: str, pool: Any) -> None:
    if impl == STDLIB:
        pool.close()
        pool.join()
    else:
        pool.shutdown(wait=True)


def run(name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    impl, _, method_name = name.rpartition(" @")
    method = None if method_name == "default" else method_name
    pool, submit, result = _open(impl, method, params["every"])
    hung_seconds = params.get("hung", HUNG_SECONDS)
    samples: list[float] = []
    hung = False
    try:
        # Warm: every worker up (jobs that sleep long enough to need both).
        warm = [submit(sleep_job, 0.05) for _ in range(2 * WORKERS)]
        [result(h, hung_seconds) for h in warm]
        n = params["n"]
        for _ in range(params["reps"]):
            start = time.perf_counter()
            handles = [submit(inc, x) for x in range(n)]
            deadline = start + hung_seconds
            got = [result(h, max(0.0, deadline - time.perf_counter())) for h in handles]
            assert got == [x + 1 for x in range(n)]
            samples.append((time.perf_counter() - start) / n * 1e6)
    except (futures.TimeoutError, multiprocessing.TimeoutError):
        hung = True
    finally:
        if not hung:
            _close(impl, pool)
    out = row(name, "process", f"every {params['every']} jobs", us_per_job=samples)
    out["ref"] = f"{STDLIB} @{method_name}"
    if hung:  # left behind: the parent kills the child and everything it started
        out["info"] = {"hung": f"no result within {hung_seconds:g} s", "exit_now": True}
    return [out]


def goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    """jobpool ahead of both standard-library pools at 25 jobs per worker, start method by
    start method."""
    from .. import report

    out = []
    for method in ("default", "forkserver"):
        mine = report._get(w, NAME, f"{JOBPOOL} @{method}", PRIMARY)
        theirs = {
            impl: report._get(w, NAME, f"{impl} @{method}", PRIMARY) for impl in (EXECUTOR, STDLIB)
        }
        known = [v for v in theirs.values() if v is not None]
        met = None if mine is None or not known else all(mine < v for v in known)
        out.append(
            report._goal(
                f"recycling every {EVERY} jobs ({method} start methods)",
                "faster than ProcessPoolExecutor(max_tasks_per_child) and "
                "mp.Pool(maxtasksperchild)",
                f"{report._fmt(mine, '{:.1f}')} us/job vs "
                + ", ".join(f"{impl} {report._fmt(v, '{:.1f}')}" for impl, v in theirs.items()),
                met,
            )
        )
    return out
