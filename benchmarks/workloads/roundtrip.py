"""One job at a time: submit -> result, N times in sequence; and the bare pipe floor.

The floor is a ``multiprocessing.Pipe`` round trip of a pickled ``(fn, (x,), {})`` to a forked
child that unpickles it, calls it and sends back the pickled result: what any process pool pays
at least, measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from multiprocessing.connection import Connection
from typing import Any

from ..common import WORKERS, Task, row
from ..impls import PROCESS_IMPLS, make
from ..jobs import inc

NAME = "roundtrip"
TITLE = "round trip: N sequential submit -> result() of inc(x), 2 workers; floor = bare Pipe"
COLUMNS = [("us_per_job", "us/round trip", "{:.1f}")]
PRIMARY = "us_per_job"
HIGHER_IS_BETTER = False
ROUNDS = 3
FLOOR = "floor: mp.Pipe + pickle"

IMPLS = [
    FLOOR,
    "jobpool[thread]",
    "cf.ThreadPoolExecutor",
    *[i for i in PROCESS_IMPLS if not i.startswith("joblib")],
]


def tasks(quick: bool, cpu_n: int) -> list[Task]:
    params = {"n": 50, "reps": 2} if quick else {"n": 1000, "reps": 3}
    return [Task(NAME, impl, params, timeout=300) for impl in IMPLS]


def _echo(conn: Connection) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        fn, args, kwargs = pickle.loads(data)
        conn.send_bytes(pickle.dumps(fn(*args, **kwargs), pickle.HIGHEST_PROTOCOL))


def _floor(params: dict[str, Any]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("fork")
    conn, child_conn = context.Pipe()
    process = context.Process(target=_echo, args=(child_conn,), daemon=True)
    process.start()
    child_conn.close()
    samples = []
    try:
        for rep in range(params["reps"] + 1):
            start = time.perf_counter()
            for i in range(params["n"]):
                conn.send_bytes(pickle.dumps((inc, (i,), {}), pickle.HIGHEST_PROTOCOL))
                pickle.loads(conn.recv_bytes())
            if rep:  # the first repetition is a warm-up
                samples.append((time.perf_counter() - start) / params["n"] * 1e6)
    finally:
        conn.send_bytes(b"")
        process.join(5)
        if process.exitcode is None:
            process.kill()
            process.join()
    out = row(FLOOR, "process", "send_bytes/recv_bytes", us_per_job=samples)
    out["ref"] = None
    return [out]


def run(impl: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if impl == FLOOR:
        return _floor(params)
    adapter = make(impl)
    adapter.open(WORKERS)
    samples = []
    try:
        adapter.warm(inc, WORKERS)
        for _ in range(params["reps"]):
            start = time.perf_counter()
            for i in range(params["n"]):
                adapter.result(adapter.submit(inc, i))
            samples.append((time.perf_counter() - start) / params["n"] * 1e6)
    finally:
        adapter.close()
    return [row(impl, adapter.flavour, adapter.submit_api, us_per_job=samples)]
