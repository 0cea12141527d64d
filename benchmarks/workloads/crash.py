"""Crash isolation: job 5 of 20 (20 ms each) calls os._exit(1) in its worker.

Results are awaited until a deadline (then 'hung'); then one more job goes to the same pool (or to
a fresh one if the same pool fails), and a graceful shutdown gets the same deadline.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from ..common import WORKERS, Task, row
from ..impls import TIMEOUTS, make
from ..jobs import crash_or_sleep, inc

NAME = "crash"
TITLE = "crash: job 5 of 20 (20 ms jobs) calls os._exit(1); then one more job on the same pool"
COLUMNS = [("batch_s", "batch s", "{:.3f}"), ("recover_ms", "recover ms", "{:.1f}")]
PRIMARY = "batch_s"
HIGHER_IS_BETTER = False
REFERENCE: dict[str, str] = {}  # no ratio: the outcome columns are what matters

IMPLS = [
    "jobpool[process]",
    "cf.ProcessPoolExecutor",
    "mp.Pool",
    "loky",
    "mpire",
    "pebble.ProcessPool",
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"jobs": 20, "crash_at": 5, "deadline": 2.0 if quick else 10.0}
    impls = IMPLS[:3] if quick else IMPLS
    return [Task(NAME, impl, params, timeout=90) for impl in impls]


def _outcome(adapter: Any, handle: Any, timeout: float) -> str:
    if isinstance(handle, BaseException):  # submit itself raised
        return type(handle).__name__
    try:
        adapter.result(handle, max(0.0, timeout))
        return "ok"
    except TIMEOUTS:
        return "hung"
    except Exception as exc:
        return type(exc).__name__


def _submit(adapter: Any, *args: Any) -> Any:
    try:
        return adapter.submit(*args)
    except Exception as exc:
        return exc


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    deadline_s = params["deadline"]
    adapter = make(impl)
    adapter.open(WORKERS)
    adapter.warm(inc, WORKERS)
    start = time.perf_counter()
    handles = [
        _submit(adapter, crash_or_sleep, i, params["crash_at"]) for i in range(params["jobs"])
    ]
    outcomes = [_outcome(adapter, h, start + deadline_s - time.perf_counter()) for h in handles]
    batch = time.perf_counter() - start
    crashed = outcomes.pop(params["crash_at"])
    others = Counter("ok" if o == "ok" else "hung" if o == "hung" else "failed" for o in outcomes)
    errors = sorted({o for o in outcomes if o not in ("ok", "hung")})

    start = time.perf_counter()
    after = _outcome(adapter, _submit(adapter, inc, 1), deadline_s)
    recover = (time.perf_counter() - start) * 1e3
    same_pool = "yes" if after == "ok" else f"no ({after})"
    if after != "ok":
        fresh = make(impl)
        start = time.perf_counter()
        fresh.open(WORKERS)
        fresh.result(fresh.submit(inc, 1), deadline_s)
        recover = (time.perf_counter() - start) * 1e3
        fresh.close()

    closer = threading.Thread(target=adapter.close, daemon=True)
    closer.start()
    closer.join(deadline_s)
    shutdown = "ok" if not closer.is_alive() else f"hung (>{deadline_s:g} s)"
    if closer.is_alive():
        threading.Thread(target=adapter.terminate, daemon=True).start()

    out = row(impl, adapter.flavour, adapter.submit_api, batch_s=[batch], recover_ms=[recover])
    out["info"] = {
        "crashed job": crashed,
        "other jobs": f"{others['ok']} ok / {others['failed']} failed / {others['hung']} hung"
        + (f" ({', '.join(errors)})" if errors else ""),
        "same pool usable after": same_pool,
        "graceful shutdown": shutdown,
        "exit_now": closer.is_alive(),
    }
    return [out]
