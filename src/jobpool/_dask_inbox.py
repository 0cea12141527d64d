"""The Dask dispatcher thread's inbox: the one queue it sleeps on, and how answers reach it.

Everything that wakes the dispatcher thread arrives here as an action to run in that thread, or
as None ("wake up": the pool queued a job, or is closing). The client's event loop puts the
actions that say a task ended; the answers to the questions the dispatcher puts to the cluster
come back the same way (:meth:`Inbox.ask`), so the thread never waits for the cluster and all
the state the actions touch is that thread's alone.

The inbox calls nothing of the dispatcher's: the thread takes the actions and runs them.
"""

from __future__ import annotations

import asyncio
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

    def ask(self, coroutine: Any, on_answer: Callable[..., object], *details: Any) -> None:
        """Run a client coroutine on its loop; its outcome (or exception) comes back as the
        action ``on_answer(*details, outcome)``."""

        def report(done: Future[Any]) -> None:
            try:
                outcome = done.result()
            except BaseException as exc:
                outcome = exc
            self._queue.put(lambda: on_answer(*details, outcome))

        asyncio.run_coroutine_threadsafe(coroutine, self._loop).add_done_callback(report)
