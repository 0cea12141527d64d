"""The messages between the dispatcher and a worker, one pipe per worker.

Every message is one pickled tuple whose first element is one of the tags below (small ints keep
the per-job path cheap; the names keep it readable). Parent -> worker:

    (RUN_CALL,  job_id, fn_key, fn_bytes | None, body)   body = pickled (args, kwargs)
    (RUN_CHUNK, job_id, fn_key, fn_bytes | None, body)   body = pickled (items, star)
    (DEFINE_FN, fn_key)  followed by one raw frame of the function's bytes
    (DEFINE_BLOB, blob_key)  followed by one raw frame: the pickled bytes or str
    (FORGET_BLOB, blob_key)
    (STOP,)

``fn_key`` is None for small functions, sent inline with every job. A large function (a closure
holding a big object) gets a key and is sent once per worker: both sides keep the same
least-recently-used table of keys, so the parent always knows what the worker holds. A keyed
function's pickle may name *blobs* (large bytes or str it holds, see ``_blobs``): the parent
defines each blob before the first function that needs it, and tells the worker when to forget
one, so the worker never guesses.

Worker -> parent:

    (READY, pid)
    (INIT_FAILED, stage, error_bytes)    stage: INIT_LOADING (unpickling it) or INIT_RUNNING
    (OK, job_id, result_bytes)
    (RAISED, job_id, error_bytes)     see jobpool._remote
    (LOG, record_dict)
    (GIVE_BACK, [job_id, ...])      the jobs it had not started, after a recall (see _ahead)

Besides its job pipe each worker has a one-way recall pipe, parent -> worker: one byte there
asks for a GIVE_BACK, and its watch thread answers even while a job runs.
"""

from __future__ import annotations

from ._execution import (  # the tags every worker of jobpool's own uses
    FUNCTION_CACHE_MIN_BYTES,
    FUNCTION_CACHE_SIZE,
    INIT_FAILED,
    OK,
    RAISED,
    RUN_CALL,
    RUN_CHUNK,
)

DEFINE_FN = 3
STOP = 4
DEFINE_BLOB = 5
FORGET_BLOB = 6

READY = 10
LOG = 14
GIVE_BACK = 15

# Where a worker's initializer failed (INIT_FAILED).
INIT_LOADING = 0
INIT_RUNNING = 1

__all__ = [
    "DEFINE_BLOB",
    "DEFINE_FN",
    "FORGET_BLOB",
    "FUNCTION_CACHE_MIN_BYTES",
    "FUNCTION_CACHE_SIZE",
    "GIVE_BACK",
    "INIT_FAILED",
    "INIT_LOADING",
    "INIT_RUNNING",
    "LOG",
    "OK",
    "RAISED",
    "READY",
    "RUN_CALL",
    "RUN_CHUNK",
    "STOP",
]
