"""Module-level jobs and fault injectors, importable in spawned and forkserver workers."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def echo_kwargs(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def exit_now(code: int = 3) -> None:
    os._exit(code)


def segfault() -> None:
    ctypes.string_at(0)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def get_pid(_: Any = None) -> int:
    return os.getpid()


def log_message(message: str) -> int:
    logging.getLogger("jobpool.tests").warning(message)
    return os.getpid()


def wait_on(event: Any, timeout: float = 60) -> bool:
    """Block until ``event`` (a multiprocessing or threading Event) is set."""
    return bool(event.wait(timeout))


def enter_and_wait(counter: Any, lock: Any, high: Any, release: Any, value: int = 0) -> int:
    """Count concurrent entries (recording the high-water mark) and wait for ``release``."""
    with lock:
        counter.value += 1
        high.value = max(high.value, counter.value)
    try:
        release.wait(60)
    finally:
        with lock:
            counter.value -= 1
    return value


class Unpicklable:
    def __init__(self) -> None:
        self.conn = threading.Lock()


class UnpicklableError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable_error() -> None:
    raise UnpicklableError("holds a lock")


def return_lock() -> Any:
    return threading.Lock()


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def add(self, x: int) -> int:
        return self.start + x


def fail_initializer() -> None:
    raise RuntimeError("initializer says no")


_state: dict[str, Any] = {}


def set_state(value: Any) -> None:
    _state["value"] = value


def get_state(_: Any = None) -> Any:
    return _state.get("value")
