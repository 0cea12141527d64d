"""DaskWorkers: the cluster's workers as the pool sees them, their slots, who joins and who leaves.

Each Dask worker the pool uses has a :class:`WorkerSlots`: its quota of the pool's slots and its
tasks in the order sent (see :mod:`jobpool._dask._slots`). Which workers the cluster has is asked
every ``MEMBERSHIP_SECONDS`` while jobs are in flight or waiting, and at once after a worker
died: the slots of workers that left go to the others, and new workers get the slots the pool
still lacks. Where a worker has more threads than slots, its quota is the pool's Dask resource
on it (:func:`._in_worker.set_slots`), set without waiting for the answer and reset to 0 when
the pool closes.

A worker that died or left takes its running jobs with it (they fail) and gives back the ones
waiting there, which had not started (they go first in the :class:`DaskLine`). The scheduler
round trip, which says how many short jobs may wait on a worker, is averaged here too.

A scheduler that is lost (the client lost its connection, or was closed) takes every worker
with it: every job the pool holds fails with :class:`SchedulerLostError`, on the cluster or
waiting, and the pool is broken (:meth:`DaskWorkers.scheduler_lost`). A client that reconnects
finds a scheduler that knows nothing of the pool's tasks, plugins and resources, so the pool
does not try to go on. Answers of an unexpected shape are logged and ignored: the next question
is asked in a second.

Calls go down only: to the pool's tasks (:class:`ClusterTasks`), the line and the inbox.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from .._errors import WorkerCrashedError
from .._job import Outcomes
from ._in_worker import set_slots
from ._parts import LowerParts, UpperPart
from ._replies import left_error, scheduler_lost_error
from ._slots import FIRST_ROUND_TRIP_SECONDS, ROUND_TRIP_WEIGHT, WorkerSlots, share_slots

_log = logging.getLogger("jobpool")

# How often to ask which workers the cluster has, while jobs are in flight or waiting.
MEMBERSHIP_SECONDS = 1.0
# How long closing waits for a worker to answer (resources are reset on a best-effort basis).
CLOSE_TIMEOUT_SECONDS = 5.0


class DaskWorkers(UpperPart):
    def __init__(
        self, lower: LowerParts, outcomes: Outcomes, *, workers: int, resource: str
    ) -> None:
        super().__init__(lower)
        self._outcomes = outcomes
        self._workers = workers
        self.resource = resource  # the name of the pool's Dask resource
        self.slots: dict[str, WorkerSlots] = {}  # address -> that worker's slots
        self.round_trip = FIRST_ROUND_TRIP_SECONDS
        self._asking = False  # a membership question is on its way
        self._due: Optional[float] = None  # when to ask the next one
        self.scheduler_address = str(getattr(self._client.scheduler, "address", "?"))
        self._lost_scheduler = False

    def slot_count(self) -> int:
        """From any thread: how many of the pool's jobs may run at once now."""
        return sum(slots.quota for slots in list(self.slots.values()))

    def any_free(self) -> bool:
        return any(slots.free_slots() for slots in self.slots.values())

    def round_trip_seen(self, seconds: float) -> None:
        self.round_trip += (seconds - self.round_trip) * ROUND_TRIP_WEIGHT

    # --- who joins and who leaves ---------------------------------------------------------------

    def check_soon(self) -> None:
        """Ask which workers the cluster has in ``MEMBERSHIP_SECONDS``, unless asking is due."""
        if self._due is None:
            self._due = time.monotonic() + MEMBERSHIP_SECONDS

    def check_times(self) -> list[float]:
        """When the dispatcher must wake up to ask (nothing while a question is on its way)."""
        return [self._due] if self._due is not None and not self._asking else []

    def check_if_due(self, now: float) -> None:
        if self._due is None or now < self._due or self._asking or self._lost_scheduler:
            return
        self._due = None
        if not self._tasks and not self._line.waiting():
            return  # idle: the next job asks again
        self._asking = True
        self._due = now + MEMBERSHIP_SECONDS
        self._inbox.ask(lambda: self._client.nthreads(asynchronous=True), self._answered)

    def _answered(self, nthreads: Any) -> None:
        self._asking = False
        if self._lost_scheduler:
            return
        if not isinstance(nthreads, dict) or not all(
            isinstance(address, str) and isinstance(n, int) and n > 0
            for address, n in nthreads.items()
        ):
            if not isinstance(nthreads, BaseException) or self._client.status == "running":
                _log.warning("the Dask scheduler's list of workers was %r; asked again", nthreads)
            return
        self.share_out(nthreads, wait=False)

    def share_out(self, nthreads: dict[str, int], wait: bool) -> None:
        """Match the pool's slots to the workers in ``nthreads`` (address -> threads)."""
        for address in [a for a in self.slots if a not in nthreads]:
            self.lost(self.slots[address], left_error(address))
        for address, n in nthreads.items():
            if address not in self.slots:
                self.slots[address] = WorkerSlots(address, n)
        share_slots(self.slots, nthreads, self._workers)
        amounts = {}
        for slots in self.slots.values():
            if slots.needs_resource and slots.resource != slots.wanted:
                amounts[slots.address] = slots.wanted
            elif not slots.needs_resource:
                slots.quota = slots.wanted
        if not amounts:
            return
        if wait:
            self._slots_set(amounts, self._client.run(set_slots, self.resource, amounts))
        else:
            self._inbox.ask(
                lambda: self._client.run(set_slots, self.resource, amounts, asynchronous=True),
                self._slots_set,
                amounts,
            )

    def _slots_set(self, amounts: dict[str, int], answers: Any) -> None:
        if not isinstance(answers, dict):
            if not self._lost_scheduler:
                _log.warning("setting the pool's Dask resource failed: %r", answers)
            return
        now = time.monotonic()
        for address, amount in answers.items():
            slots = self.slots.get(address)
            if slots is None or not isinstance(amount, int) or amount < 0:
                continue
            slots.resource = amount
            slots.quota = min(slots.wanted, amount)
            slots.promote(now)

    def lost(self, slots: WorkerSlots, error: WorkerCrashedError) -> None:
        """A worker died or left: its running jobs fail, the ones waiting there run elsewhere."""
        if self.slots.get(slots.address) is slots:
            del self.slots[slots.address]
            self._outcomes.count("worker_restarts")  # its nanny, if any, starts a new one
        running = list(slots.running())
        for task in list(slots.tasks):
            if task in running:
                self._tasks.fail(task, error, time.monotonic())
            else:
                self._tasks.drop(task, time.monotonic())
                self._line.give_back(task.job)
        for task in self._tasks.fetching_on(slots):
            task.future.release()  # its result died with the worker: the fetch fails now
        self._due = time.monotonic()  # its replacement, if any, gets its slots

    def scheduler_lost(self, connection_lost: bool = False) -> bool:
        """Whether the pool lost its scheduler; the first time, every job the pool holds fails
        and the pool breaks.

        Lost: the client is no longer running (it tries to reconnect, or it closed), or
        ``connection_lost``: one of the pool's tasks was cancelled because the client lost its
        connection (it may have reconnected since, to a scheduler that knows nothing of them).
        """
        if self._lost_scheduler:
            return True
        status = str(self._client.status)
        if status in ("running", "newly-created") and not connection_lost:
            return False
        self._lost_scheduler = True
        address = self.scheduler_address
        self._line.break_pool(scheduler_lost_error(address, status, on_cluster=False))
        self._tasks.fail_all(scheduler_lost_error(address, status, on_cluster=True))
        self.slots.clear()  # no worker to send a job to: the pool is broken
        self._due = None
        return True

    def reset(self) -> None:
        """Set the pool's resource to 0 where it was set (a best effort: the pool is closing)."""
        amounts = {s.address: 0 for s in self.slots.values() if s.resource}
        if not amounts or self._client.status != "running":
            return
        try:
            self._client.run(
                set_slots, self.resource, amounts, callback_timeout=CLOSE_TIMEOUT_SECONDS
            )
        except Exception:
            _log.debug("resetting the pool's Dask resource failed", exc_info=True)
