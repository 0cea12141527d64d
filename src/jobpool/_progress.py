"""Progress bars and result callbacks for ``map``, ``starmap``, ``amap`` and ``as_completed``.

One rule for all of them: the bar advances and ``on_result`` / ``on_error`` run in the thread that
iterates the results (for ``amap``: in the event loop), once per item, as the item is handed over.
Never in a worker, never in the pool's own threads, never two at once; so a callback may touch a
UI toolkit or a plain list without locks, and a slow callback slows the consumer, not the pool.

``on_error`` changes what a failed item does: without it the item's exception is raised when its
turn comes (and the iteration ends); with it the exception is passed to ``on_error`` and the item is
left out of the results, so one bad item does not stop the rest.

tqdm is an optional dependency (``pip install "jobpool[progress]"``); it is imported only when a
bar is asked for, and its absence is reported when ``progress=True`` is passed, not at import.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from collections.abc import Iterable, Iterator, Mapping, Sized
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Callable, Optional, TypeVar, Union

from typing_extensions import Protocol

from ._job import ChunkResult, chunk_outcomes
from ._map import TARGET_CHUNK_SECONDS, SubmitChunk

R = TypeVar("R")

INSTALL_HINT = (
    'pip install "jobpool[progress]" (from a checkout of jobpool: pip install ".[progress]")'
)


class ProgressBar(Protocol):
    """Anything with ``update(n)``: a ``tqdm`` instance, or an adapter to another progress UI."""

    def update(self, n: int = 1) -> object: ...


#: What ``progress=`` accepts: ``True`` (a new tqdm bar), a dict of tqdm keyword arguments, an
#: existing bar (anything with ``update(n)``; jobpool advances it but does not close it), or
#: ``False`` / ``None`` (no bar).
ProgressArg = Union[bool, None, Mapping[str, Any], ProgressBar]
ResultCallback = Callable[[Any], object]
ErrorCallback = Callable[[BaseException], object]


def load_tqdm() -> Any:
    """The tqdm class (``tqdm.auto``: a widget in notebooks, text elsewhere), or a clear error."""
    try:
        module = importlib.import_module("tqdm.auto")
    except ImportError as exc:
        raise ImportError(
            "progress bars need tqdm, an optional dependency of jobpool: "
            f"{INSTALL_HINT} (or pass progress=False and use on_result= for your own UI)"
        ) from exc
    return module.tqdm


def sized_total(iterables: Iterable[object]) -> Optional[int]:
    """The number of items a map over ``iterables`` will produce, if every one knows its length."""
    lengths = []
    for iterable in iterables:
        if not isinstance(iterable, Sized):
            return None
        try:
            lengths.append(len(iterable))
        except Exception:
            return None
    return min(lengths) if lengths else None


class Failed:
    """Stands in a chunk's values for an item that raised, so the stream of items goes on."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Reporter:
    """Advances a bar and calls the callbacks, in whichever thread (or loop) calls it."""

    def __init__(
        self,
        bar: Optional[ProgressBar],
        owns_bar: bool,
        on_result: Optional[ResultCallback],
        on_error: Optional[ErrorCallback],
    ) -> None:
        self.bar = bar
        self._owned: Any = bar if owns_bar else None  # a tqdm bar we made, closed at the end
        self.on_result = on_result
        self.on_error = on_error
        self.failed = 0

    def result(self, value: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.on_result is not None:
            self.on_result(value)

    def error(self, exc: BaseException) -> bool:
        """Report a failed item; True if ``on_error`` took it (skip it), False to raise it."""
        self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
            set_postfix = getattr(self.bar, "set_postfix", None)
            if set_postfix is not None:
                set_postfix(failed=self.failed)
        if self.on_error is None:
            return False
        self.on_error(exc)
        return True

    def close(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def follow(self, results: Iterator[Any]) -> Iterator[Any]:
        """Report every item of a ``map`` over chunks submitted through
        :func:`capture_failures`, as it is handed to the caller."""
        try:
            for value in results:
                if type(value) is Failed:
                    if not self.error(value.error):
                        raise value.error
                    continue
                self.result(value)
                yield value
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # cancels the chunks still in flight
            self.close()


def make_reporter(
    progress: ProgressArg,
    on_result: Optional[ResultCallback],
    on_error: Optional[ErrorCallback],
    total: Optional[int] = None,
    fn: object = None,
) -> Optional[Reporter]:
    """A :class:`Reporter` for these arguments, or None when nothing was asked for.

    Raises ImportError (naming the extra to install) here, at call time, when a bar is asked for
    and tqdm is missing; TypeError for arguments of the wrong kind.
    """
    for what, callback in (("on_result", on_result), ("on_error", on_error)):
        if callback is not None and not callable(callback):
            raise TypeError(f"{what} must be callable, got {callback!r}")
    bar: Optional[ProgressBar] = None
    owns_bar = False
    if progress is None or progress is False:
        pass
    elif progress is True or isinstance(progress, Mapping):
        options: dict[str, Any] = {"total": total}
        name = getattr(fn, "__name__", None)
        if isinstance(name, str) and name != "<lambda>":
            options["desc"] = name
        if isinstance(progress, Mapping):
            options.update(progress)
        bar = load_tqdm()(**options)
        owns_bar = True
    elif not isinstance(progress, bool) and callable(getattr(progress, "update", None)):
        bar = progress
    else:
        raise TypeError(
            "progress must be True/False, a dict of tqdm options or a progress bar "
            f"(an object with update(n)), not {progress!r}"
        )
    if bar is None and on_result is None and on_error is None:
        return None
    return Reporter(bar, owns_bar, on_result, on_error)


def capture_failures(submit_chunk: SubmitChunk) -> SubmitChunk:
    """Wrap ``submit_chunk`` so a failed item arrives as a :class:`Failed` value, not an error.

    A chunk that failed as a whole (its worker crashed, it timed out or was killed) becomes one
    ``Failed`` per item. Cancellation passes through both ways, so ``map``'s clean-up and
    ``shutdown(cancel_futures=True)`` behave as without callbacks.
    """

    def submit(chunk: list[Any]) -> Future[ChunkResult]:
        inner = submit_chunk(chunk)
        outer: Future[ChunkResult] = Future()
        count = len(chunk)

        def forward(done: Future[ChunkResult]) -> None:
            if done.cancelled():
                outer.cancel()
                return
            exc = done.exception()
            result = None if exc is not None else done.result()
            if result is None or result.errors:
                values = [v if ok else Failed(v) for ok, v in chunk_outcomes(done, count)]
                elapsed = TARGET_CHUNK_SECONDS if result is None else result.elapsed
                result = ChunkResult(values, None, elapsed)
            try:
                outer.set_result(result)
            except InvalidStateError:  # the map gave up on this chunk meanwhile
                pass

        outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
        inner.add_done_callback(forward)
        return outer

    return submit


def as_completed(
    fs: Iterable[Future[R]],
    timeout: Optional[float] = None,
    *,
    progress: ProgressArg = None,
    on_result: Optional[Callable[[R], object]] = None,
    on_error: Optional[ErrorCallback] = None,
) -> Iterator[Future[R]]:
    """Yield the futures as they complete, like ``concurrent.futures.as_completed``, with a bar.

    Works with any ``concurrent.futures.Future`` (from one pool, several pools, or the stdlib).
    ``on_result(value)`` or ``on_error(exception)`` is called once per future, in the thread that
    iterates, just before the future is yielded; a cancelled future counts as an error
    (``CancelledError``). Futures are yielded whether they succeeded or not, as with the stdlib.

    Args:
        timeout: seconds from this call after which ``TimeoutError`` is raised if futures are
            still unfinished.
        progress: ``True`` for a tqdm bar (total = number of futures), a dict of tqdm options,
            or an existing bar; needs ``pip install "jobpool[progress]"`` for the first two.

    Raises:
        ImportError: a bar was asked for and tqdm is not installed (raised by this call).
    """
    futures = list(dict.fromkeys(fs))
    reporter = make_reporter(progress, on_result, on_error, len(futures))
    if reporter is None:
        return concurrent.futures.as_completed(futures, timeout)
    return _report_futures(futures, timeout, reporter)


def _report_futures(
    futures: list[Future[R]], timeout: Optional[float], reporter: Reporter
) -> Iterator[Future[R]]:
    try:
        for future in concurrent.futures.as_completed(futures, timeout):
            if future.cancelled():
                reporter.error(CancelledError())
            else:
                exc = future.exception()
                if exc is not None:
                    reporter.error(exc)
                else:
                    reporter.result(future.result())
            yield future
    finally:
        reporter.close()
