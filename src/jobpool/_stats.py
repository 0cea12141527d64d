"""PoolStats: a frozen snapshot of what a pool is doing, cheap enough to call in a loop."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStats:
    """Counts since the pool was created, plus what is happening right now.

    .. versionadded:: 0.1
    """

    #: Jobs accepted by ``submit``/``map`` (a ``map`` chunk counts as one job).
    submitted: int
    #: Jobs waiting in the queue for a worker (the queue depth).
    pending: int
    #: Jobs a worker is running now.
    running: int
    #: Jobs that returned a result.
    done: int
    #: Jobs that raised, crashed their worker, timed out or were killed (after their last
    #: attempt, with retries).
    failed: int
    #: Jobs cancelled before they started.
    cancelled: int
    #: The part of ``failed`` that ran past its time limit (in its last attempt).
    timed_out: int
    #: Worker processes (or abandoned threads) replaced: crashes, timeouts, kills and recycling.
    worker_restarts: int
    #: Workers serving the queue now; a worker being stopped or replaced no longer counts.
    workers: int
    #: Jobs waiting for the futures among their arguments (not in ``pending`` yet).
    waiting: int = 0
    #: The part of ``failed`` stopped for going over ``job_memory_limit`` (process backend).
    over_memory_limit: int = 0
    #: Workers replaced after a job because their own memory was over ``max_worker_memory``
    #: (also counted in ``worker_restarts``).
    recycled_for_memory: int = 0
    #: Attempts that failed and were run again (``retries=``); a ``map`` chunk whose failed
    #: items run again counts once per retry.
    retried: int = 0
    #: Jobs waiting for their next attempt (their retry delay), on no worker.
    waiting_to_retry: int = 0
