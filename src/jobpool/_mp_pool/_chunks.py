"""Submitting a map's chunks to a ``jobpool.Pool``: the one seam into its internals.

``Pool.map`` serializes the function once for all of a map's chunks (the pool's ``Intake``
plans it: ``Intake.plan_map`` returns that ``MapPlan``) and sends each chunk as one job
(``MapPlan.chunk_job``, queued by ``Intake.enqueue``) whose result holds every item's value or
exception (``ChunkResult``).
``map_async`` and ``imap`` need exactly those jobs, without the lazy iterator ``Pool.map`` wraps
them in (``map_async`` submits every chunk at once, as the stdlib does) or with per-item errors
that do not end the iteration (``imap``, through ``windowed_map(resumable=...)``). These names
are all this package uses of jobpool's internals; single calls go through ``Pool.submit``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._job import ChunkResult

if TYPE_CHECKING:
    from .._intake import MapPlan
    from .._map import SubmitChunk
    from .._pool import Pool


def stdlib_chunksize(items: int, workers: int) -> int:
    """``multiprocessing.Pool.map``'s default: about four chunks per worker."""
    chunksize, extra = divmod(items, workers * 4)
    return max(1, chunksize + 1 if extra else chunksize)


def chunk_submitter(
    pool: Pool,
    where: str,
    fn: Callable[..., Any],
    chunksize: Optional[int],
    star: bool,
    buffersize: Optional[int] = None,
) -> tuple[SubmitChunk, MapPlan]:
    """A function that submits one chunk of ``fn``'s items, and the plan it follows.

    ``plan.chunksize`` is the size to cut chunks at (None: adapt it, as ``Pool.map`` does);
    with a job time limit and no chunksize given it is 1, so the limit applies per item.
    ``plan.window`` is ``buffersize``, or ``Pool.map``'s default window. Raises what
    ``Pool.map`` raises for a bad function, chunksize or buffersize, or a pool shut down.
    """
    intake = pool._intake
    plan = intake.plan_map(
        where, fn, ((),), timeout=None, chunksize=chunksize, buffersize=buffersize,
        job_timeout=pool._job_timeout, progress=None, on_result=None, on_error=None,
    )  # fmt: skip
    enqueue = intake.enqueue
    chunk_job = plan.chunk_job

    def submit(chunk: list[Any]) -> Future[ChunkResult]:
        return enqueue(chunk_job(chunk, star), True)

    return submit, plan


def submit_chunks(
    pool: Pool,
    where: str,
    fn: Callable[..., Any],
    items: Iterable[Any],
    chunksize: Optional[int],
    star: bool,
) -> list[Future[ChunkResult]]:
    """Submit all of ``items`` at once, in chunks (``map_async``); their futures, in order.

    If one cannot be submitted (an item that cannot be pickled), those already submitted are
    cancelled: the call fails, so nobody would ever ask for their results.
    """
    submit, plan = chunk_submitter(pool, where, fn, chunksize, star)
    size = plan.chunksize or 1
    chunks: list[Future[ChunkResult]] = []
    rest = iter(items)
    try:
        chunk = list(itertools.islice(rest, size))
        while chunk:
            chunks.append(submit(chunk))
            chunk = list(itertools.islice(rest, size))
    except BaseException:
        for submitted in chunks:
            submitted.cancel()
        raise
    return chunks
