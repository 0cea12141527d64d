"""The Dask dispatcher thread's inbox: the one queue it sleeps on, and how answers reach it.

Everything that wakes the dispatcher thread arrives here as an action to run in that thread, or
as None ("wake up": the pool queued a job, or is closing). The client's event loop puts the
actions that say a task ended; the answers to the questions the dispatcher puts to the cluster
come back the same way (:meth:`Inbox.ask`), so the thread never waits for the cluster and all
the state the actions touch is that thread's alone. A question the client cannot even put (it
lost its scheduler, say) comes back the same way, as its exception: asking never raises into
the thread.

Other threads run functions in the dispatcher thread with :meth:`Inbox.call`. When the thread
ends, :meth:`Inbox.stop` fails the calls still waiting, and every later one, with the reason,
at once instead of after their timeout.

The inbox calls nothing of the dispatcher's: the thread takes the actions and runs them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any, Callable, Optional

Action = Callable[[], object]


class Inbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop  # the Dask client's event loop
        self._queue: SimpleQueue[Optional[Action]] = SimpleQueue()
        # Whether a wake-up is on its way (read without a lock; the thread clears it per turn).
        self.wake_pending = False
        self._lock = threading.Lock()  # for the two below
        self._calls: set[Future[Any]] = set()  # the answers of calls not run yet
        self._stopped: Optional[BaseException] = None  # why the thread ended

    def put(self, action: Action) -> None:
        """Run ``action`` in the dispatcher thread, at its next turn."""
        self._queue.put(action)

    def wake(self) -> None:
        self.wake_pending = True
        self._queue.put(None)

    def take(self, timeout: Optional[float]) -> list[Optional[Action]]:
        """Sleep until something arrives (at most ``timeout``), then take all that did."""
        try:
            actions = [self._queue.get(timeout=timeout)]
        except Empty:
            return []
        while True:
            try:
                actions.append(self._queue.get_nowait())
            except Empty:
                return actions

    def ask(self, make: Callable[[], Any], on_answer: Callable[..., object], *details: Any) -> None:
        """Run the client coroutine ``make()`` on the client's loop; its outcome comes back as
        the action ``on_answer(*details, outcome)``, an exception included (also one raised by
        ``make`` itself, or by a loop that is closed)."""

        def answer(outcome: Any) -> None:
            self._queue.put(lambda: on_answer(*details, outcome))

        def report(done: Future[Any]) -> None:
            try:
                outcome = done.result()
            except BaseException as exc:
                outcome = exc
            answer(outcome)

        coroutine = None
        try:
            coroutine = make()
            asyncio.run_coroutine_threadsafe(coroutine, self._loop).add_done_callback(report)
        except Exception as exc:
            if asyncio.iscoroutine(coroutine):
                coroutine.close()  # never scheduled: not "never awaited" either
            answer(exc)

    # --- calls from other threads ---------------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` in the dispatcher thread; its result (or exception) on the future."""
        answer: Future[Any] = Future()
        with self._lock:
            if self._stopped is not None:
                answer.set_exception(self._stopped)
                return answer
            self._calls.add(answer)
        self._queue.put(lambda: self._answer(answer, fn))
        return answer

    def _answer(self, answer: Future[Any], fn: Callable[[], Any]) -> None:
        with self._lock:
            self._calls.discard(answer)
        try:
            answer.set_result(fn())
        except BaseException as exc:
            answer.set_exception(exc)

    def stop(self, reason: BaseException) -> None:
        """The dispatcher thread ends: fail the calls it will not run, now and from now on."""
        with self._lock:
            if self._stopped is None:
                self._stopped = reason
            calls, self._calls = self._calls, set()
        for answer in calls:
            if not answer.done():
                answer.set_exception(reason)
