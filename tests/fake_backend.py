"""An in-memory backend that runs jobs only when a test says so: the pool without processes.

It holds to the same contract as the real backends (``jobpool._contract.Backend``; mypy checks
this file in strict mode, see test_typing.py), so tests of the pool's own logic (admission,
backpressure, map windowing, cancel, kill, shutdown, a broken pool) run deterministically, in
the test's own thread: a job runs when the test calls :meth:`FakeBackend.run` or
:meth:`FakeBackend.start`.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Callable, Optional

from jobpool import JobKilledError
from jobpool._contract import NOT_SERIALIZED, Backend, BackendSetup, PreparedFunction
from jobpool._job import Job


class FakeBackend:
    name = "fake"
    read_reply = None
    serializes = False  # prepare() only counts

    def __init__(self, setup: BackendSetup, kill_limitation: Optional[str] = None) -> None:
        self.setup = setup
        self.kill_limitation = kill_limitation
        self.prepared = 0
        self.started: list[Job] = []  # running: started, not finished
        self.closed = False

    def prepare(self, job: Job) -> None:
        self.prepared += 1

    def prepare_function(self, fn: Callable[..., Any]) -> PreparedFunction:
        return NOT_SERIALIZED

    def offer(self, job: Job) -> bool:
        return False

    def refused(self, job: Job) -> None:
        pass

    def notify(self) -> None:
        pass

    def start(self) -> Optional[Job]:
        """Take the next waiting job and mark it running (it does not run yet)."""
        while True:
            job = self.setup.queue.get_nowait()
            if job is None:
                return None
            if self.setup.outcomes.start(job):
                self.started.append(job)
                return job

    def finish(self, job: Job) -> None:
        """Run a started job now, in the calling thread."""
        self.started.remove(job)
        try:
            value = job.work.run()
        except BaseException as exc:
            self.setup.outcomes.fail(job, exc)
        else:
            self.setup.outcomes.succeed(job, value)

    def run(self, count: int = 1) -> int:
        """Start and finish up to ``count`` waiting jobs; how many ran."""
        ran = 0
        while ran < count:
            job = self.start()
            if job is None:
                break
            self.finish(job)
            ran += 1
        return ran

    def kill(self, future: Future[Any]) -> bool:
        if self.kill_limitation is not None:
            return False  # like Dask: a running job cannot be stopped
        for job in self.started:
            if job.future is future:
                self.started.remove(job)
                return self.setup.outcomes.fail(job, JobKilledError("killed by the fake"))
        return False

    def worker_count(self) -> int:
        return 0 if self.closed else self.setup.workers

    def shutdown(self, wait: bool) -> None:
        self.closed = True
        if wait:
            while self.run(100):
                pass
            for job in list(self.started):
                self.finish(job)

    def terminate(self) -> None:
        self.closed = True
        for job in list(self.started):
            self.started.remove(job)
            self.setup.outcomes.fail(job, JobKilledError("the pool was terminated"))


def factory(kill_limitation: Optional[str] = None) -> Callable[..., Backend]:
    """What goes into ``jobpool._backend_factory.FACTORIES`` for the fake."""

    def make(setup: BackendSetup, options: Mapping[str, Any]) -> Backend:
        backend = FakeBackend(setup, kill_limitation)
        made.append(backend)
        return backend

    return make


#: Every fake made, newest last.
made: list[FakeBackend] = []
