"""What ``retries=``, ``retry_on=`` and the delay options say, and their checks (see ``_retry``).

A pool's options make one :class:`RetryPolicy`; a view (``pool.options(...)``) makes another
over it, each option it does not give being the pool's. A policy decides two things for an
attempt that failed: whether its exception may be retried (:meth:`RetryPolicy.verdict`) and how
long to wait first (:meth:`RetryPolicy.delay_before`). How many attempts were made, and what
they raised, is not a policy's: that is each job's ``_retry.Attempts``.
"""

from __future__ import annotations

import logging
import math
import random
from concurrent.futures import BrokenExecutor, CancelledError
from typing import Any, Callable, Optional, Union

from ._errors import DependencyError, JobKilledError, SerializationError

_log = logging.getLogger("jobpool")

#: ``retry_on=``: exception classes, a tuple of them, or a predicate ``(exc) -> bool``.
RetryOn = Union[
    type[BaseException], tuple[type[BaseException], ...], Callable[[BaseException], Any]
]

#: Never retried, whatever ``retry_on`` says: they mean "stop", or the same bytes fail again.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    CancelledError,
    JobKilledError,
    DependencyError,
    BrokenExecutor,
    SerializationError,
)
MAX_RETRIES = 10**9  # "retry until it works" needs no more; a larger number is a mistake
MAX_DELAY = 86_400.0  # a day: a longer wait is a schedule, not a retry

DEFAULT_DELAY = 0.1
DEFAULT_BACKOFF = 2.0
DEFAULT_MAX_DELAY = 60.0
DEFAULT_JITTER = 0.5

# --- the policy ------------------------------------------------------------------------------


class RetryPolicy:
    """What ``retries=``, ``retry_on=`` and the delay options of a pool or view say."""

    __slots__ = ("backoff", "delay", "jitter", "max_delay", "retries", "retry_on")

    def __init__(
        self,
        retries: int,
        retry_on: RetryOn,
        delay: float,
        backoff: float,
        max_delay: float,
        jitter: float,
    ) -> None:
        self.retries = retries
        self.retry_on = retry_on
        self.delay = delay
        self.backoff = backoff
        self.max_delay = max_delay
        self.jitter = jitter

    def delay_before(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1: the second attempt):
        ``delay * backoff ** (retry - 1)``, at most ``max_delay``, times a random factor
        between ``1 - jitter`` and ``1 + jitter`` (and again at most ``max_delay``)."""
        if not self.delay:
            return 0.0
        try:
            base = min(self.max_delay, self.delay * self.backoff ** (retry - 1))
        except OverflowError:  # backoff ** a billion: far past the ceiling
            base = self.max_delay
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return min(self.max_delay, base)

    def verdict(self, exc: BaseException) -> tuple[bool, str]:
        """Whether ``exc`` may be retried, and if not, why (for the final error's note)."""
        if not isinstance(exc, Exception) or isinstance(exc, NEVER_RETRIED):
            return False, f"{type(exc).__name__} is never retried"
        retry_on = self.retry_on
        if isinstance(retry_on, (type, tuple)):
            if isinstance(exc, retry_on):
                return True, ""
            return False, "retry_on does not retry it"
        try:
            if retry_on(exc):
                return True, ""
        except Exception as predicate_error:
            _log.error(
                "the retry_on predicate %r raised on %r: the job is not retried",
                retry_on,
                exc,
                exc_info=predicate_error,
            )
            return False, (
                f"the retry_on predicate raised {type(predicate_error).__name__}: "
                f"{predicate_error}; not retried"
            )
        return False, "retry_on said not to retry it"


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} ({value!r})")
    if not (low <= value <= high):  # also refuses nan
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def check_retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retries must be an int, not {type(value).__name__} ({value!r})")
    if not 0 <= value <= MAX_RETRIES:
        raise ValueError(
            f"retries must be between 0 (no retries) and {MAX_RETRIES:_} (retry until it works,"
            f" with Pool.kill() or cancel() to stop), got {value!r}"
        )
    return value


def check_retry_on(value: object) -> RetryOn:
    """Exception classes (one, or a non-empty tuple), or a predicate; each class must be one
    that can be retried."""
    classes: Optional[tuple[Any, ...]] = None
    if isinstance(value, type):
        classes = (value,)
    elif isinstance(value, tuple):
        classes = value
        if not classes:
            raise ValueError("retry_on=() retries nothing: use retries=0 instead")
    elif callable(value):
        return value
    else:
        raise TypeError(
            "retry_on must be an exception class, a tuple of them, or a predicate "
            f"(exc) -> bool, not {type(value).__name__} ({value!r})"
        )
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"retry_on holds {cls!r}, which is not an exception class")
        if cls is not BaseException and not issubclass(cls, Exception):
            raise ValueError(
                f"retry_on holds {cls.__name__}, which is never retried: a BaseException that is "
                "not an Exception (KeyboardInterrupt, SystemExit) means stop"
            )
        for never in NEVER_RETRIED:
            if issubclass(cls, never):
                raise ValueError(
                    f"retry_on holds {cls.__name__}, which is never retried: "
                    f"{never.__name__} means the job must stop, or would fail the same way"
                )
    return value


def make_policy(
    base: Optional[RetryPolicy],
    retries: Any = None,
    retry_on: Any = None,
    delay: Any = None,
    backoff: Any = None,
    max_delay: Any = None,
    jitter: Any = None,
) -> Optional[RetryPolicy]:
    """The policy of a pool (``base`` None) or of a view over ``base``: each option given (not
    None) replaces the base's; None when there are no retries. Options about retries without any
    retries are refused rather than ignored."""
    given = [
        name
        for name, value in (
            ("retry_on", retry_on),
            ("retry_delay", delay),
            ("retry_backoff", backoff),
            ("retry_max_delay", max_delay),
            ("retry_jitter", jitter),
        )
        if value is not None
    ]
    count = check_retries(retries) if retries is not None else (base.retries if base else 0)
    if count == 0:
        if given:
            raise ValueError(
                f"{', '.join(given)} given without retries: set retries=N (the attempts after "
                "the first) too"
            )
        return None
    policy = RetryPolicy(
        count,
        check_retry_on(retry_on)
        if retry_on is not None
        else (base.retry_on if base else Exception),
        _number("retry_delay", delay, 0.0, MAX_DELAY)
        if delay is not None
        else (base.delay if base else DEFAULT_DELAY),
        _number("retry_backoff", backoff, 1.0, 1e6)
        if backoff is not None
        else (base.backoff if base else DEFAULT_BACKOFF),
        _number("retry_max_delay", max_delay, 0.0, MAX_DELAY)
        if max_delay is not None
        else (base.max_delay if base else DEFAULT_MAX_DELAY),
        _number("retry_jitter", jitter, 0.0, 1.0)
        if jitter is not None
        else (base.jitter if base else DEFAULT_JITTER),
    )
    if not math.isfinite(policy.delay * policy.backoff):  # pragma: no cover - bounded above
        raise ValueError("retry_delay * retry_backoff must be finite")
    return policy
