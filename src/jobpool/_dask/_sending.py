"""Sender: which worker each job of the Dask backend runs on; moving jobs stuck behind a long one.

A job goes to the worker with the most free slots, else to the one with the fewest tasks per
slot that still has room (free slots, plus a few to wait there when its jobs are short: see
:meth:`WorkerSlots.room`). Its task is pinned to that worker, so it waits in that worker's own
queue and starts the moment a slot there is free.

Tasks waiting behind a job that turned out long are taken back (``withdraw_tasks`` on their
worker) when a slot is free elsewhere; the line sends them again, first, to a free slot.

Calls go down only: to the workers' slots, the line, the pool's tasks (:class:`ClusterTasks`)
and the inbox. The dispatcher hands the tasks sent to :class:`Results`, which watches them.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import time
from typing import Any, Optional

from .._job import Call, Job
from .._protocol import RUN_CALL, RUN_CHUNK
from ._in_worker import run_on_worker, withdraw_tasks
from ._parts import LowerParts, UpperPart
from ._per_worker import PoolInstances
from ._slots import Task, WorkerSlots
from ._workers import DaskWorkers


class Sender(UpperPart):
    def __init__(
        self,
        lower: LowerParts,
        workers: DaskWorkers,
        *,
        token: str,
        with_initializer: bool,
        per_worker: PoolInstances,
    ) -> None:
        super().__init__(lower)
        self._workers = workers
        self._token = token
        self._run_token = token if with_initializer else None  # its tasks check the initializer
        self._per_worker = per_worker
        self._numbers = itertools.count()

    def send_jobs(self) -> list[Task]:
        """Send waiting jobs while a worker has room for them; the tasks sent."""
        sent: list[Task] = []
        while True:
            target = self._target()
            if target is None:
                break
            job = self._line.next_job(free_slot=target.free_slots() > 0)
            if job is None:
                break
            target = self._near_its_inputs(job, target)
            task = self._send(job, target)
            if task is not None:
                sent.append(task)
        return sent

    def has_room(self) -> bool:
        """Whether a worker has room for one more job."""
        return self._target() is not None

    def _target(self) -> Optional[WorkerSlots]:
        """The worker to send the next job to: most free slots, else fewest tasks per slot."""
        best: Optional[WorkerSlots] = None
        best_rank = (0, -math.inf)
        for slots in self._workers.slots.values():
            if slots.room(self._workers.round_trip) <= 0:
                continue
            rank = (slots.free_slots(), -len(slots.tasks) / slots.quota)
            if best is None or rank > best_rank:
                best, best_rank = slots, rank
        return best

    def _near_its_inputs(self, job: Job, target: WorkerSlots) -> WorkerSlots:
        """The worker holding the job's first input kept on the cluster, if it has room as
        good as ``target``'s (a free slot if ``target`` has one): its value is already there."""
        inputs = job.serialized.inputs if job.serialized is not None else None
        near = self._workers.slots.get(inputs.near) if inputs is not None and inputs.near else None
        if near is None or near is target or near.room(self._workers.round_trip) <= 0:
            return target
        if target.free_slots() > 0 and near.free_slots() <= 0:
            return target
        return near

    def _send(self, job: Job, target: WorkerSlots) -> Optional[Task]:
        serialized = job.serialized
        assert serialized is not None and serialized.fn_bytes is not None
        kind = RUN_CALL if isinstance(job.work, Call) else RUN_CHUNK
        # A readable key for Dask's dashboard and logs: "jobpool-square-<pool>-<job id>-<n>".
        name = re.sub(r"\W+", "_", str(getattr(job.work.fn, "__name__", "job"))).strip("_")
        key = f"jobpool-{name or 'job'}-{self._token[:12]}-{job.id}-{next(self._numbers)}"
        restrictions: dict[str, Any] = {"workers": [target.address], "allow_other_workers": False}
        if target.resource is not None:
            restrictions["resources"] = {self._workers.resource: 1}

        inputs = serialized.inputs  # its futures' values (see _inputs)
        if job.priority:  # Dask runs the tasks waiting on a worker in this order too
            restrictions["priority"] = job.priority

        def submit() -> Any:
            return self._client.submit(
                run_on_worker,
                self._run_token,
                kind,
                serialized.fn_bytes,
                serialized.body,
                key,
                self._per_worker.key(),  # installs its plugin once handles travel
                None if inputs is None else inputs.values,
                key=key,
                pure=False,
                fifo_timeout=0,  # a generation of its own: see _slots (order of tasks)
                **restrictions,
            )

        return self._tasks.send(job, target, key, submit)

    # --- waiting tasks that turned out stuck behind a long job ----------------------------------

    def recall_times(self) -> list[float]:
        """When to take back tasks stuck behind a long job (never while no slot is free)."""
        if not self._workers.any_free():
            return []  # nowhere better to run them
        return [at for s in self._workers.slots.values() if (at := s.recall_at()) is not None]

    def recall(self, now: float) -> None:
        """Ask each worker whose running job is overdue for the tasks waiting behind it."""
        if not self._workers.any_free():
            return  # nowhere better to run them
        for slots in self._workers.slots.values():
            recall_at = slots.recall_at()
            if recall_at is not None and recall_at <= now:
                slots.recalling = True
                keys = [task.key for task in slots.waiting()]
                asking = functools.partial(
                    self._client.run,
                    withdraw_tasks,
                    keys,
                    workers=[slots.address],
                    asynchronous=True,
                )
                self._inbox.ask(asking, self._recalled, slots)

    def _recalled(self, slots: WorkerSlots, answers: Any) -> None:
        slots.recalling = False
        slots.recalled_at = time.monotonic()
        answer = answers.get(slots.address) if isinstance(answers, dict) else None
        if not isinstance(answer, dict):  # an error, or not an answer to the question
            return
        now = time.monotonic()
        for key, taken_back in answer.items():
            task = self._tasks.get(key) if isinstance(key, str) else None
            if taken_back is True and task is not None and task.slots is slots:
                self._tasks.drop(task, now)
                self._line.give_back(task.job)
