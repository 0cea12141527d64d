"""The thread that runs ``apply_async`` / ``map_async`` callbacks: one per pool, one at a time.

The stdlib runs ``callback`` and ``error_callback`` in its pool's result-handler thread, one at a
time, in the order results complete, and before ``get()`` returns; code written for it updates
plain lists and counters from callbacks without locks. jobpool resolves a future in whichever
thread learns its outcome (the dispatcher, a worker thread, a thread reading its own reply), so
callbacks are handed to this thread instead: the same guarantees, and a slow callback delays only
the callbacks behind it, never the pool's own work nor the results that have no callback.

The thread starts with the first result that has a callback, and ends once the pool is closed or
terminated and every such result has been delivered. A callback that raises is logged on the
``jobpool`` logger; the result is still delivered and the thread goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Optional

from typing_extensions import Protocol

_log = logging.getLogger("jobpool")


class Delivery(Protocol):
    """A result whose callbacks are due: ``deliver()`` runs them, then marks it ready."""

    def deliver(self) -> None: ...


class CallbackThread:
    """Runs deliveries in one thread, in the order they are put (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Optional[Delivery]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._expected = 0  # results with callbacks not delivered yet
        self._closing = False

    def expect(self) -> None:
        """A result with callbacks was made: keep the thread until it is delivered."""
        with self._lock:
            self._expected += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="jobpool-callbacks", daemon=True
                )
                self._thread.start()

    def put(self, delivery: Delivery) -> None:
        """Deliver ``delivery`` after those put before it (from any thread)."""
        self._queue.put(delivery)

    def close(self) -> None:
        """No more results will be made: end the thread once the expected ones are delivered."""
        with self._lock:
            self._closing = True
            if self._thread is not None and self._expected == 0:
                self._queue.put(None)

    def join(self) -> None:
        """Wait until the thread has ended (after :meth:`close`); at once if it never started."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            delivery = get()
            if delivery is None:
                return
            try:
                delivery.deliver()
            except BaseException:  # deliver() catches the callbacks' errors; this is a bug
                _log.exception("jobpool.multiprocessing could not deliver %r", delivery)
            with self._lock:
                self._expected -= 1
                if self._closing and self._expected == 0:
                    return
