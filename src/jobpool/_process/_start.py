"""How a worker process starts: without the user's ``__main__``, and able to say why it failed.

**No ``__main__`` in workers.** With the spawn and forkserver start methods, multiprocessing
re-imports the parent's main script in every child (``spawn.get_preparation_data`` records it as
``init_main_from_path`` / ``init_main_from_name``), so that objects pickled by reference to
``__main__`` can be found there. That is why a script without the ``if __name__ == "__main__":``
guard re-runs its top level in each worker, and why a script fed on standard input fails (the
child looks for a file called ``<stdin>``). jobpool never sends anything by reference to
``__main__``: functions, classes and instances from the script travel by value (cloudpickle, see
``_serialization``), so its workers do not need the script at all. :func:`skip_main_in_workers`
drops the two entries for jobpool's own worker processes, recognised by their name; every other
process started through multiprocessing keeps the stdlib's behaviour. The fork server is not told
to preload ``__main__`` either (see ``_context``).

**The setup travels as bytes.** :class:`WorkerSetup` carries the initializer and its arguments.
Under spawn and forkserver it is pickled while multiprocessing pickles the ``Process`` (so
``multiprocessing.Lock``, ``Queue`` or ``Value`` arguments, which may only travel at process
creation, work as with the stdlib pools) but it is unpickled by the worker's own code, inside a
``try``: a module that cannot be imported in the worker is reported with its traceback instead
of killing the process before it could say anything.

**Startup stderr is captured.** Until a worker is ready, its file descriptor 2 writes into a pipe
that the dispatcher reads: every byte is passed on to the parent's ``sys.stderr`` at once, and
the last lines are kept, so a worker that dies before it can report (``os._exit`` in an
initializer, a crash in a C extension) is described by what it printed and by its exit status.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections import ChainMap, deque
from collections.abc import Iterator
from typing import Any, Callable, Optional

from .. import _main_globals
from .._main_globals import share_main_globals
from .._platform import after_fork_in_child

# Names of jobpool's worker processes start with this; it is how the preparation data of a
# worker is told from that of any other process (see skip_main_in_workers).
WORKER_NAME_PREFIX = "jobpool-worker-"
# The part of a dying worker's startup stderr kept for the error message.
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 8192

_MAIN_ENTRIES = ("init_main_from_path", "init_main_from_name")


_launching = threading.local()  # .without_main: starting a process of jobpool's own (Dask's)
_install_lock = threading.Lock()


@contextlib.contextmanager
def starting_without_main() -> Iterator[None]:
    """Start the processes started in this block, in this thread, without ``__main__``.

    For processes jobpool starts under another name than its workers': the Dask backend's own
    LocalCluster workers (see ``_dask._cluster``).
    """
    skip_main_in_workers()
    _launching.without_main = True
    try:
        yield
    finally:
        _launching.without_main = False


def skip_main_in_workers() -> None:
    """Have multiprocessing start jobpool's workers without importing the parent's ``__main__``.

    Installed once per process; a no-op when already installed. It wraps
    ``multiprocessing.spawn.get_preparation_data``, which the spawn and forkserver start methods
    call with the new process's name; only names starting with :data:`WORKER_NAME_PREFIX`, and
    processes started inside :func:`starting_without_main`, lose their ``__main__`` entries.
    """
    from multiprocessing import spawn

    with _install_lock:
        original: Callable[[str], dict[str, Any]] = spawn.get_preparation_data
        if getattr(original, "_jobpool_skips_main", False):
            return

        def get_preparation_data(name: str) -> dict[str, Any]:
            data = original(name)
            ours = isinstance(name, str) and name.startswith(WORKER_NAME_PREFIX)
            if ours or getattr(_launching, "without_main", False):
                for entry in _MAIN_ENTRIES:
                    data.pop(entry, None)
            return data

        get_preparation_data._jobpool_skips_main = True  # type: ignore[attr-defined]
        get_preparation_data.__doc__ = original.__doc__
        get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
        spawn.get_preparation_data = get_preparation_data


class WorkerSetup:
    """The initializer and its arguments, unpickled by the worker itself (see the module doc).

    With the fork start method the object is inherited as it is; otherwise ``__reduce__`` runs
    while multiprocessing pickles the ``Process`` and turns it into bytes.
    """

    def __init__(
        self, initializer: Optional[Callable[..., object]], initargs: tuple[Any, ...]
    ) -> None:
        self._value: Optional[tuple[Any, tuple[Any, ...]]] = (initializer, initargs)
        self._data: Optional[bytes] = None

    @property
    def initializer(self) -> Optional[Callable[..., object]]:
        return None if self._value is None else self._value[0]

    def load(self) -> tuple[Optional[Callable[..., object]], tuple[Any, ...]]:
        """The initializer and its arguments (in the worker: unpickled now)."""
        if self._value is None:
            assert self._data is not None
            self._value = _main_globals.loads(self._data)
            self._data = None
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_setup_from_bytes, (dumps_setup(self.load()),))


def _setup_from_bytes(data: bytes) -> WorkerSetup:
    setup = WorkerSetup.__new__(WorkerSetup)
    setup._value = None
    setup._data = data
    return setup


def dumps_setup(value: object) -> bytes:
    """Pickle ``(initializer, initargs)`` for a new worker: by reference where a fresh process
    finds it again, by value (cloudpickle) where it names ``__main__`` or pickle refuses; the
    objects multiprocessing shares only at process creation (locks, queues) pickle as they do
    for the stdlib pools."""
    import io
    from multiprocessing.context import get_spawning_popen
    from multiprocessing.reduction import ForkingPickler

    from .._picklers import PROTOCOL, is_plain_pickle_refusal, load_cloudpickle

    # The descriptors each attempt hands the new process (``DupFd``): those of an attempt whose
    # pickle is thrown away are taken back (spawn refuses a descriptor listed twice).
    handed: Optional[list[int]] = getattr(get_spawning_popen(), "_fds", None)
    before = None if handed is None else len(handed)
    try:
        data = bytes(ForkingPickler.dumps(value, PROTOCOL))
    except Exception as exc:
        if not is_plain_pickle_refusal(exc):
            raise
    else:
        if b"__main__" not in data:
            return data
    if handed is not None:
        del handed[before:]
    buffer = io.BytesIO()
    pickler = _setup_pickler(load_cloudpickle(), ForkingPickler)(buffer, PROTOCOL)
    share_main_globals(pickler)
    pickler.dump(value)
    return buffer.getvalue()


_SETUP_PICKLER: Optional[type] = None


def _setup_pickler(cloudpickle: Any, forking_pickler: Any) -> Any:
    """cloudpickle's pickler with multiprocessing's own reducers first (connections, sockets,
    the shared memory of a ``Value``), as in multiprocessing's pickler.

    A class of its own: cloudpickle's ``Pickler`` keeps its ``dispatch_table`` as a class
    attribute, which hides the C pickler's own, so one set on an instance is never consulted
    (a ``multiprocessing.Value`` among the arguments of an initializer from the script failed
    with "cannot pickle 'mmap.mmap' object")."""
    global _SETUP_PICKLER
    if _SETUP_PICKLER is None:
        base = cloudpickle.Pickler
        table = ChainMap(forking_pickler._extra_reducers, base.dispatch_table)
        _SETUP_PICKLER = type("SetupPickler", (base,), {"dispatch_table": table})
    return _SETUP_PICKLER


def _forget_workers_in_child() -> None:
    """In a forked child, multiprocessing's list of this process's children still names the
    parent's jobpool workers; at the child's exit it would send them SIGTERM (daemon processes
    are terminated) and fail to join them. They are the parent's: the child forgets them."""
    from multiprocessing import process

    children = getattr(process, "_children", None)
    if not isinstance(children, set):
        return
    for child in list(children):
        name = getattr(child, "_name", None)
        if isinstance(name, str) and name.startswith(WORKER_NAME_PREFIX):
            children.discard(child)


after_fork_in_child(_forget_workers_in_child)


# --- the worker's side ---------------------------------------------------------------------------


@contextlib.contextmanager
def stderr_into(pipe: Any) -> Iterator[None]:
    """In the worker: send file descriptor 2 into ``pipe`` (a write-only Connection) until done.

    A file descriptor, not ``sys.stderr``, so that C code, ``faulthandler`` and a dying
    interpreter are captured too; the pipe is closed afterwards, which tells the parent that
    the worker's startup output is complete.
    """
    if pipe is None:
        yield
        return
    _flush_stderr()
    saved = os.dup(2)
    os.dup2(pipe.fileno(), 2)
    # sys.stderr too: a forked worker inherits whatever object the parent had there (a test
    # runner's capture, a notebook's stream), which need not write to file descriptor 2. One
    # that does (the fork server's, a spawned worker's) is kept: a new stream costs a worker's
    # start about 0.15 ms of CPU.
    saved_stream = sys.stderr
    if not _writes_to_fd_2(saved_stream):
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace"
        )
    try:
        yield
    finally:
        _flush_stderr()
        sys.stderr = saved_stream
        os.dup2(saved, 2)
        os.close(saved)
        pipe.close()


def _writes_to_fd_2(stream: Any) -> bool:
    """Whether ``stream`` writes each line to file descriptor 2 (as Python's own stderr does)."""
    try:
        return (
            stream is not None
            and stream.fileno() == 2
            and getattr(stream, "line_buffering", False) is True
        )
    except Exception:  # a capture or a notebook's stream: no descriptor of its own
        return False


def _flush_stderr() -> None:
    stream = sys.stderr
    if stream is not None:
        try:
            stream.flush()
        except Exception:
            pass


# --- the parent's side ---------------------------------------------------------------------------


class StartupOutput:
    """The parent's end of a starting worker's stderr: passed on to ``sys.stderr``, tail kept.

    ``owner`` is the object that holds ``fd`` (a ``Connection``), closed with it; without one,
    the descriptor itself is closed.
    """

    def __init__(self, fd: int, owner: Any = None) -> None:
        self.fd = fd
        self._owner = owner
        self.closed = False
        self.ended = False  # end of file: the worker is ready (or gone)
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._partial = b""

    def read(self) -> bool:
        """Read what is there (the fd is readable); False at end of file (then :meth:`close`)."""
        if self.closed or self.ended:
            return False
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self.ended = True
            return False
        _write_stderr(data)
        self._keep(data)
        return True

    def drain(self) -> None:
        """Read everything already in the pipe (an exited worker's last words), never blocking."""
        import select

        while self.read() and select.select([self.fd], [], [], 0)[0]:
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._owner is not None:
                self._owner.close()
            else:
                os.close(self.fd)

    def tail(self) -> str:
        """The last lines written, as text (possibly empty)."""
        text = b"".join([*self._tail, self._partial]).decode("utf-8", "replace")
        lines = text.rstrip("\n").splitlines()[-STDERR_TAIL_LINES:]
        return "\n".join(lines)

    def _keep(self, data: bytes) -> None:
        data = self._partial + data
        head, newline, self._partial = data.rpartition(b"\n")
        if newline:
            self._tail.append(head + newline)
            self._tail_bytes += len(head) + 1
        if len(self._partial) > STDERR_TAIL_BYTES:
            self._partial = self._partial[-STDERR_TAIL_BYTES:]
        while self._tail_bytes > STDERR_TAIL_BYTES and len(self._tail) > 1:
            self._tail_bytes -= len(self._tail.popleft())


def _write_stderr(data: bytes) -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()
    except Exception:
        pass
