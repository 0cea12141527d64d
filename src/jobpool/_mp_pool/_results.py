"""What ``apply_async`` and ``map_async`` return: the stdlib's ``AsyncResult`` and ``MapResult``.

Both wrap jobpool futures. ``get(timeout)`` raises ``multiprocessing.TimeoutError`` when the
result is not ready in time, and re-raises a failed job's own exception (with the worker's
traceback as its ``__cause__`` on processes). A job the pool cancelled because it was terminated
before the job started fails with ``CancelledError`` instead of leaving ``get()`` waiting forever.

A result without callbacks is ready when its future is. A result with callbacks is ready only
once its callback has run in the pool's callback thread (as in the stdlib, where ``get()``
returning means the callback ran), so it carries an Event that thread sets.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Generic, Optional, TypeVar

from .._job import ChunkResult
from ._callbacks import CallbackThread

T = TypeVar("T")
ResultCallback = Callable[[Any], object]
ErrorCallback = Callable[[BaseException], object]

TERMINATED = "the job was cancelled before it started: its pool was terminated"
_log = logging.getLogger("jobpool")


def not_ready(timeout: Optional[float]) -> multiprocessing.TimeoutError:
    return multiprocessing.TimeoutError(f"the result was not ready within {timeout} s")


def outcome(future: Future[Any], timeout: Optional[float]) -> Any:
    """``future.result(timeout)`` with the stdlib pool's errors for waiting and termination."""
    try:
        return future.result(timeout)
    except (FuturesTimeoutError, CancelledError):
        return settle(future, timeout)


def settle(future: Future[Any], timeout: Optional[float]) -> Any:
    """After ``result(timeout)`` raised one of these: the wait ran out, the pool cancelled the
    job, or the job raised one of them itself."""
    if future.cancelled():
        raise CancelledError(TERMINATED) from None
    if not future.done():
        raise not_ready(timeout) from None
    return future.result()


def error_of(future: Future[Any]) -> Optional[BaseException]:
    """The exception a done future failed with (a CancelledError if cancelled), or None."""
    if future.cancelled():
        return CancelledError(TERMINATED)
    return future.exception()


class AsyncResult(Generic[T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready`` and ``successful``."""

    __slots__ = ("_future",)

    _ready: Optional[threading.Event] = None  # set once the callbacks ran (CalledBack)

    def __init__(self, future: Future[T]) -> None:
        self._future = future

    def ready(self) -> bool:
        """Whether the job has finished (and its callback, if any, has run)."""
        ready = self._ready
        return self._future.done() if ready is None else ready.is_set()

    def successful(self) -> bool:
        """Whether the job returned without raising; ``ValueError`` while it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return error_of(self._future) is None

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until the result is ready, or ``timeout`` seconds have passed."""
        if self._ready is not None:
            self._ready.wait(timeout)
            return
        try:
            self._future.exception(timeout)
        except (FuturesTimeoutError, CancelledError):
            pass

    def get(self, timeout: Optional[float] = None) -> T:
        """The job's return value; re-raises its exception.

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout`` seconds.
            concurrent.futures.CancelledError: the pool was terminated before the job started.
        """
        if self._ready is not None and not self._ready.wait(timeout):
            raise not_ready(timeout)
        try:  # outcome(), inlined: get() is on every job's path
            value: T = self._future.result(timeout)
        except (FuturesTimeoutError, CancelledError):
            value = settle(self._future, timeout)
        return value

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<{type(self).__module__}.{type(self).__qualname__} {state}>"


class CalledBack(AsyncResult[T]):
    """An ``AsyncResult`` with callbacks: ready once its callback ran in the callback thread."""

    __slots__ = ("_callback", "_error_callback", "_ready")

    def __init__(
        self,
        future: Future[T],
        callbacks: CallbackThread,
        callback: Optional[ResultCallback],
        error_callback: Optional[ErrorCallback],
    ) -> None:
        self._future = future
        self._callback = callback
        self._error_callback = error_callback
        self._ready = threading.Event()
        callbacks.expect()
        future.add_done_callback(lambda _: callbacks.put(self))

    def deliver(self) -> None:
        """Run the callback that applies; then the result is ready (in the callback thread)."""
        try:
            error = error_of(self._future)
            if error is None:
                if self._callback is not None:
                    self._callback(self._future.result())
            elif self._error_callback is not None:
                self._error_callback(error)
        except BaseException:
            _log.exception("the callback of %r raised", self)
        finally:
            assert self._ready is not None
            self._ready.set()


class MapResult(AsyncResult[list[T]]):
    """The result of ``map_async`` / ``starmap_async``: every item's value, in input order.

    Ready once every chunk has finished, failed or not (as in the stdlib, every item runs);
    ``get()`` then raises the exception of the first item that failed, in input order.
    """

    __slots__ = (
        "_all_done",
        "_callback",
        "_chunks",
        "_done",
        "_error_callback",
        "_left",
        "_lock",
        "_outcome",
    )

    def __init__(
        self,
        chunks: Sequence[Future[ChunkResult]],
        callbacks: CallbackThread,
        callback: Optional[ResultCallback],
        error_callback: Optional[ErrorCallback],
    ) -> None:
        self._chunks = list(chunks)
        self._left = len(self._chunks)
        self._lock = threading.Lock()
        self._outcome: Optional[tuple[bool, Any]] = None
        self._callback = callback
        self._error_callback = error_callback
        self._all_done = threading.Event()  # and the callbacks ran
        self._done: Optional[Callable[[], None]] = self._all_done.set
        if callback is not None or error_callback is not None:
            callbacks.expect()
            self._done = lambda: callbacks.put(self)
        if not self._chunks:
            self._finish()
        for chunk in self._chunks:
            chunk.add_done_callback(self._chunk_done)

    def _chunk_done(self, _: Future[ChunkResult]) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        self._finish()

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def ready(self) -> bool:
        return self._all_done.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._assemble()[0]

    def wait(self, timeout: Optional[float] = None) -> None:
        self._all_done.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> list[T]:
        if not self._all_done.wait(timeout):
            raise not_ready(timeout)
        succeeded, value = self._assemble()
        if succeeded:
            return value  # type: ignore[no-any-return]
        raise value

    def deliver(self) -> None:
        try:
            succeeded, value = self._assemble()
            if succeeded:
                if self._callback is not None:
                    self._callback(value)
            elif self._error_callback is not None:
                self._error_callback(value)
        except BaseException:
            _log.exception("the callback of %r raised", self)
        finally:
            self._all_done.set()

    def _cancel(self) -> None:
        """Cancel the chunks that have not started (nobody will ask for this result)."""
        for chunk in self._chunks:
            chunk.cancel()

    def _assemble(self) -> tuple[bool, Any]:
        """(True, values) or (False, first error), built once all chunks are done."""
        with self._lock:
            if self._outcome is None:
                self._outcome = _collect(self._chunks)
                self._chunks = []  # let go of the chunks' values: the list now holds them
            return self._outcome


def _collect(chunks: list[Future[ChunkResult]]) -> tuple[bool, Any]:
    values: list[Any] = []
    for chunk in chunks:
        error = error_of(chunk)
        if error is not None:
            return False, error
        result = chunk.result()
        if result.errors:
            return False, result.errors[min(result.errors)]
        values += result.values
    return True, values
