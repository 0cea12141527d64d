"""The messages between the pool and its workers, on both backends: every tag, in one place.

Every message is a tuple whose first element is one of the tags below (small ints keep the
per-job path cheap; the names keep it readable). A job is run the same way by both kinds of
worker (``_execution``): ``RUN_CALL`` or ``RUN_CHUNK`` says what it is, and the outcome comes
back as ``OK`` with the pickled result, ``RAISED`` with the packed exception
(``_remote_exceptions``) or ``INIT_FAILED`` when the pool's initializer failed there.

**Process backend**, one pipe per worker, each message one pickled frame. Parent -> worker:

    (RUN_CALL,  job_id, fn_key, fn_bytes | None, body)   body = pickled (args, kwargs)
    (RUN_CHUNK, job_id, fn_key, fn_bytes | None, body)   body = pickled (items, star)
    (DEFINE_FN, fn_key)  followed by one raw frame of the function's bytes
    (DEFINE_BLOB, blob_key)  followed by one raw frame: the pickled bytes or str
    (FORGET_BLOB, blob_key)
    (STOP,)

``fn_key`` is None for small functions, sent inline with every job. A large function (a closure
holding a big object) gets a key and is sent once per worker: both sides keep the same
least-recently-used table of ``FUNCTION_CACHE_SIZE`` keys, so the parent always knows what the
worker holds (``_process/_shipped``). A keyed function's pickle may name *blobs* (large bytes or
str it holds, see ``_process/_blobs``): the parent defines each blob before the first function
that needs it, and tells the worker when to forget one, so the worker never guesses.

Worker -> parent:

    (READY, pid)
    (INIT_FAILED, stage, error_bytes)    stage: INIT_LOADING (unpickling it) or INIT_RUNNING
    (OK, job_id, result_bytes)
    (RAISED, job_id, error_bytes)
    (LOG, record_dict)
    (GIVE_BACK, [job_id, ...])      the jobs it had not started, after a recall (_send_ahead)

Besides its job pipe each worker has a one-way recall pipe, parent -> worker: one byte there
asks for a GIVE_BACK, and its watch thread answers even while a job runs.

**Dask backend**: a job is the task ``_dask._in_worker.run_on_worker(token, RUN_CALL or
RUN_CHUNK, fn_bytes, body, key, instances)``, which returns ``(tag, bytes, seconds)``, its tag
``OK``, ``RAISED``, ``INIT_FAILED``, or ``WITHDRAWN`` for a task the pool took back before it
started there.
"""

from __future__ import annotations

# What a worker runs: one call, or a chunk of a map (both backends).
RUN_CALL = 1
RUN_CHUNK = 2
# What only a process worker is told.
DEFINE_FN = 3
STOP = 4
DEFINE_BLOB = 5
FORGET_BLOB = 6

# What a worker answers (both backends, but READY, LOG and GIVE_BACK: process workers only).
READY = 10
INIT_FAILED = 11
OK = 12
RAISED = 13
LOG = 14
GIVE_BACK = 15
WITHDRAWN = 16  # a Dask task taken back before it started

# Where a process worker's initializer failed (INIT_FAILED).
INIT_LOADING = 0
INIT_RUNNING = 1

# Functions a worker keeps unpickled, by key (process) or by their bytes (Dask); the oldest is
# forgotten first. The process backend's parent keeps the same table for each worker.
FUNCTION_CACHE_SIZE = 16
