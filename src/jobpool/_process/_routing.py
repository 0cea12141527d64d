"""Which job goes to which worker: waiting jobs to idle workers, short ones ahead (_send_ahead).

The dispatcher calls :func:`assign_jobs` and :func:`send_ahead` on every turn of its loop; a
waiting caller that gives a worker's pipe back calls :func:`assign_jobs` too (_lending). Both
ask the workers (``Workers``, the handles) what may be done, and have them do it: nothing here
changes a worker's bookkeeping itself.
"""

from __future__ import annotations

import time

from ._line import JobLine
from ._state import jobs_left, may_take_ahead
from ._workers import Workers


def assign_jobs(workers: Workers, line: JobLine) -> None:
    """Send the next waiting job to each idle worker."""
    if workers.idle_count <= 0 or workers.terminating:
        return
    for handle in workers.handles:
        if not handle.idle:
            continue
        job = line.next_job()
        if job is None:
            return
        workers.start_job(handle, job)


def send_ahead(workers: Workers, line: JobLine) -> None:
    """Give busy workers whose jobs are short their next jobs now (see _send_ahead)."""
    if workers.terminating or not line.waiting():
        return
    now = time.monotonic()
    for handle in workers.handles:
        left = jobs_left(handle.jobs_done, workers.max_jobs)  # recycled: never more than it runs
        if not may_take_ahead(
            handle.state, len(handle.ahead), handle.job_seconds, now - handle.started_at, left
        ):
            continue
        handle.hold_writes()  # the jobs it takes now go out in one write
        try:
            while may_take_ahead(
                handle.state, len(handle.ahead), handle.job_seconds, now - handle.started_at, left
            ):
                job = line.next_job_if(handle.fits_ahead)
                if job is None:
                    break
                try:
                    handle.run(job)
                except OSError:  # the worker died under us: its exit requeues the jobs
                    break
        finally:
            try:
                handle.flush_writes()
            except OSError:  # as above
                pass
        if not line.waiting():
            return
