"""Factories for per_worker tests, importable in spawned, forkserver and Dask workers.

Each one records what happened to it as an empty file in a directory the test gives it: workers
of another process (or of a Dask cluster) share no memory with the test, and a file is written
before the call that made it returns, so the test reads a settled record once the pool is shut
down (or waits for one with a deadline, see ``gates.wait_until``).

    build-<pid>-<thread ident>-<uid>     a factory built an instance (uid names that instance)
    close-<uid>                          it was closed (close() or __exit__)
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple


class Call(NamedTuple):
    """What a call through a handle saw: who ran it, which instance, and the result."""

    pid: int
    thread: int
    uid: str
    value: Any


class Build(NamedTuple):
    pid: int
    thread: int
    uid: str


def _touch(directory: str, name: str) -> None:
    Path(directory, name).touch()


class Recorder:
    """Records its build and its close; ``where(x)`` says who ran it, on which instance."""

    def __init__(self, directory: str, scale: int = 1) -> None:
        self.directory = directory
        self.scale = scale
        self.uid = uuid.uuid4().hex
        self.closed = False
        _touch(directory, f"build-{os.getpid()}-{threading.get_ident()}-{self.uid}")

    def where(self, x: int) -> Call:
        assert not self.closed, "called after close()"
        return Call(os.getpid(), threading.get_ident(), self.uid, x * self.scale)

    def close(self) -> None:
        self.closed = True
        _touch(self.directory, f"close-{self.uid}")


class LockedLog:
    """Holds a lock and an open file, with no __getstate__: it cannot be pickled."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def append(self, line: str) -> int:
        with self.lock:
            self.file.write(f"{line}\n")
        return os.getpid()

    def close(self) -> None:
        self.file.close()


class FailingOnce(Recorder):
    """Fails to build while ``<directory>/fail-<n>`` tokens remain, taking one per attempt.

    ``os.remove`` succeeds for exactly one caller, so each token fails exactly one build, in
    whichever worker gets there first.
    """

    def __init__(self, directory: str) -> None:
        for token in sorted(Path(directory).glob("fail-*")):
            try:
                os.remove(token)
            except FileNotFoundError:
                continue
            raise ValueError(f"cannot connect ({token.name})")
        super().__init__(directory)


class ManagedResource:
    """A context manager with no close(): per_worker enters it when built, exits it at the end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.uid = uuid.uuid4().hex
        self.entered = False

    def __enter__(self) -> ManagedResource:
        self.entered = True
        _touch(self.directory, f"build-{os.getpid()}-{threading.get_ident()}-{self.uid}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        _touch(self.directory, f"close-{self.uid}")

    def where(self, x: int) -> Call:
        assert self.entered, "used before __enter__"
        return Call(os.getpid(), threading.get_ident(), self.uid, x)


@contextmanager
def recorder_session(directory: str) -> Iterator[Recorder]:
    """A @contextmanager factory: jobs use what it yields; its cleanup runs at the end."""
    recorder = Recorder(directory)
    try:
        yield recorder
    finally:
        recorder.close()


class BadClose(Recorder):
    def close(self) -> None:
        super().close()
        raise OSError("the server hung up")


def combine(first: Any, second: Any, x: int) -> tuple[Call, Call]:
    """Uses two handles passed as arguments."""
    return first.where(x), second.where(x)


def use_all(handles: dict[str, list[Any]], x: int) -> list[Call]:
    """Uses handles found inside a container argument."""
    return [handle.where(x) for handle in handles["all"]]


def where_then_exit(handle: Any, x: int) -> None:
    """Builds the instance in this worker, then kills the worker (a crash, not an exit)."""
    handle.where(x)
    os._exit(7)


def where_from_threads(handle: Any, count: int) -> list[Call]:
    """Calls through ``handle`` from ``count`` threads of this job at once."""
    barrier = threading.Barrier(count, timeout=60)
    calls: list[Call] = []

    def call() -> None:
        barrier.wait()
        calls.append(handle.where(0))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return calls


def where_to_file(handle: Any, path: str) -> None:
    """In a process of its own: which instance the handle gives there, written to ``path``."""
    Path(path).write_text(handle.where(0).uid, encoding="utf-8")


def builds(directory: str) -> list[Build]:
    out = []
    for path in Path(directory).glob("build-*"):
        _, pid, thread, uid = path.name.split("-")
        out.append(Build(int(pid), int(thread), uid))
    return out


def closes(directory: str) -> set[str]:
    return {path.name.split("-", 1)[1] for path in Path(directory).glob("close-*")}
