"""Module-level jobs and fault injectors, importable in spawned and forkserver workers."""

from __future__ import annotations

import builtins
import ctypes
import logging
import os
import signal
import sys
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


def raise_builtin(name: str, *args: Any) -> None:
    """Raise Python's own exception type ``name`` made here from ``args`` (an exception passed
    as an argument would be pickled on its way in as well)."""
    raise getattr(builtins, name)(*args)


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


def log_at(level: int, message: str) -> int:
    logging.getLogger("jobpool.tests").log(level, message)
    return os.getpid()


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


class Plain:
    """An ordinary object, which (unlike an int) a weak reference can follow."""


def make_object(_: Any = None) -> Plain:
    return Plain()


class Incomparable:
    """Refuses ``==`` as a NumPy array does (its truth value is ambiguous)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array with more than one element is ambiguous")

    __hash__ = object.__hash__


def make_incomparable(value: int) -> Incomparable:
    return Incomparable(value)


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


def modules_loaded(names: list[str]) -> list[bool]:
    """Which of the modules ``names`` this worker had imported before the job ran."""
    return [name in sys.modules for name in names]


def mark_module(name: str, value: Any) -> None:
    """Change the state of module ``name`` in this worker (imported here if need be)."""
    __import__(name)
    sys.modules[name].__dict__["_jobpool_test_mark"] = value


def module_mark(name: str) -> Any:
    """What :func:`mark_module` left in module ``name`` here, or None."""
    __import__(name)
    return getattr(sys.modules[name], "_jobpool_test_mark", None)


# --- a gate: jobs report that they started (with their pid) and wait to be released ----------
#
# Synchronization primitives of multiprocessing cannot be passed as job arguments (they may
# only be inherited), and a Manager is one more process. A Unix socket works under every start
# method: the job connects, says "<tag> <pid>", and blocks reading until the test releases it
# (or closes the gate). The test side blocks on a queue, never on a sleep.


def gate_job(address: str, tag: Any, result: Any = None, hold: bool = True) -> Any:
    """Tell the test's :class:`StartGate` that ``tag`` started, on which pid; wait for release."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(address)
        sock.sendall(f"{tag} {os.getpid()}\n".encode())
        if hold:
            sock.settimeout(120)  # a ceiling only: the test releases or closes the gate
            sock.recv(1)
    return result


def gate_then_exit(address: str, tag: Any, code: int = 3) -> None:
    """Wait at the gate until released, then end the worker process abruptly."""
    gate_job(address, tag)
    os._exit(code)


def gate_then_raise(address: str, tag: Any, message: str) -> None:
    gate_job(address, tag)
    raise ValueError(message)


def gate_then_sleep(address: str, tag: Any, seconds: float) -> Any:
    """Report to the gate without waiting, then run for ``seconds`` (a job that is busy)."""
    gate_job(address, tag, hold=False)
    time.sleep(seconds)
    return tag


class StartGate:
    """Test side of :func:`gate_job`: learn which jobs started, on which pid; release them.

    It also counts the jobs *inside* the gate (arrived, not yet returned: a job's connection
    stays open until ``gate_job`` returns or its process dies) and the most that were ever inside
    at once, which is how tests check a bound on running jobs. It works from threads, processes
    of every start method and Dask workers on this machine alike.
    """

    def __init__(self) -> None:
        import queue
        import socket
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="jpgate")  # short: Unix socket paths are limited
        self.address = os.path.join(self._dir, "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.address)
        self._server.listen(256)
        self._arrivals: queue.Queue[tuple[str, int]] = queue.Queue()
        self._conns: dict[str, Any] = {}  # waiting at the gate, by tag
        self.started: dict[str, int] = {}  # tag -> pid, for every arrival collected so far
        self._released: set[str] = set()  # released before they arrived: let them pass at once
        self._closing = False
        self._lock = threading.Lock()
        self._left = threading.Condition(self._lock)  # notified when a job leaves
        self._tags: dict[Any, str] = {}  # connection -> tag, while the job is inside
        self._gone: set[str] = set()  # jobs that were inside and left
        self.inside = 0  # jobs that arrived and have not returned (or died) yet
        self.most_inside = 0  # the most that were ever inside at once
        self._thread = threading.Thread(target=self._serve, name="test-gate", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            while not self._closing:
                events = selector.select()
                # A job's return happens before the next job on its worker starts: count the
                # returns seen in this batch before the arrivals.
                events.sort(key=lambda event: event[0].fileobj is self._server)
                for key, _ in events:
                    if key.fileobj is self._server:
                        conn = self._arrive()
                        if conn is not None:
                            selector.register(conn, selectors.EVENT_READ)
                    else:
                        self._leave(selector, key.fileobj)
            for key in list(selector.get_map().values()):
                if key.fileobj is not self._server:
                    key.fileobj.close()

    def _arrive(self) -> Any:
        """Take a job's "<tag> <pid>" line; returns its connection, held until it leaves."""
        try:
            conn, _ = self._server.accept()
        except OSError:  # closed
            return None
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = conn.recv(256)
            except OSError:
                chunk = b""
            if not chunk:
                break
            data += chunk
        if not data.endswith(b"\n"):  # the job died before it said anything
            conn.close()
            return None
        tag, pid = data.decode().split()
        with self._lock:
            self._tags[conn] = tag
            self._gone.discard(tag)
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            if tag in self._released or self._closing:
                _let_go(conn)
            else:
                self._conns[tag] = conn
        self._arrivals.put((tag, int(pid)))
        return conn

    def _leave(self, selector: Any, conn: Any) -> None:
        """The job's end of the connection closed: it returned, or its process died."""
        selector.unregister(conn)
        conn.close()
        with self._lock:
            self.inside -= 1
            tag = self._tags.pop(conn)
            self._gone.add(tag)
            if self._conns.get(tag) is conn:
                del self._conns[tag]
            self._left.notify_all()

    def wait(self, timeout: float = 60) -> tuple[str, int]:
        """The next job to start: (tag, pid). Raises AssertionError if none comes in time."""
        import queue

        try:
            tag, pid = self._arrivals.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no job reached the gate within {timeout} s") from None
        self.started[tag] = pid
        return tag, pid

    def wait_for(self, tag: Any, timeout: float = 60) -> int:
        """Wait until the job tagged ``tag`` has started; return its pid."""
        tag = str(tag)
        deadline = time.monotonic() + timeout
        while tag not in self.started:
            self.wait(max(0.0, deadline - time.monotonic()))
        return self.started[tag]

    def collect(self) -> dict[str, int]:
        """Take in every arrival so far without waiting; returns all started jobs."""
        import queue

        while True:
            try:
                tag, pid = self._arrivals.get_nowait()
            except queue.Empty:
                return self.started
            self.started[tag] = pid

    def release(self, tag: Any) -> None:
        """Let job ``tag`` return, whether it waits at the gate already or arrives later."""
        with self._lock:
            conn = self._conns.pop(str(tag), None)
            if conn is None:
                self._released.add(str(tag))
            else:
                _let_go(conn)

    def release_in_turn(self, total: int, timeout: float = 60) -> None:
        """Let ``total`` jobs (those waiting here now included) through one at a time: release
        the oldest waiting, wait until it has returned, take in whoever arrived meanwhile; when
        none waits, wait for the next to arrive.

        The jobs held meanwhile keep their slots busy, so a pool that ever ran more jobs at once
        than its bound shows it in :attr:`most_inside`. It never waits for a job that may not
        come: either one is held here, or every slot is free and the pool must start one.
        """
        self.collect()
        with self._lock:
            held = [tag for tag in self.started if tag in self._conns]  # waiting now, in order
        arrived = len(held)
        while held or arrived < total:
            if not held:
                held.append(self.wait(timeout)[0])
                arrived += 1
                continue
            tag = held.pop(0)
            self.release(tag)
            with self._left:
                if not self._left.wait_for(lambda tag=tag: tag in self._gone, timeout):
                    raise AssertionError(f"job {tag} did not return within {timeout} s")
            while not self._arrivals.empty():
                held.append(self.wait(0)[0])
                arrived += 1

    def release_all(self) -> None:
        """Release every job waiting at the gate now (not those still to arrive)."""
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
            for conn in conns:
                _let_go(conn)

    def close(self) -> None:
        import shutil
        import socket

        with self._lock:
            self._closing = True  # from now on every job passes at once
        self.release_all()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the select() (close alone does not)
        except OSError:
            pass
        self._thread.join(10)
        self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        # A job that connects after this finds no socket and fails: only after the test is over.

    def __enter__(self) -> StartGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _let_go(conn: Any) -> None:
    """Tell a job at the gate to return; its connection stays open until it has."""
    try:
        conn.sendall(b"x")
    except OSError:  # the job's worker is gone
        pass


def exit_in_initializer() -> None:
    os._exit(5)


def pid_and_value(x: Any) -> tuple[int, Any]:
    return os.getpid(), x


def mark_run(directory: str, tag: Any, result: Any = None) -> Any:
    """Record that job ``tag`` ran, once: a second run of the same job raises FileExistsError.

    The mark exists before the job returns, so once its future has resolved the test sees it.
    """
    fd = os.open(os.path.join(directory, str(tag)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return result


def runs_in(directory: str) -> dict[str, int]:
    """The jobs :func:`mark_run` recorded in ``directory``: tag -> pid of the process that ran."""
    marks = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            marks[name] = int(f.read())
    return marks


def append_pid(path: str) -> None:
    """An initializer that records which process ran it, one line per run."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


def announce_and_sleep(seconds: float) -> float:
    """Print ``WORKER <pid>`` on stdout (for a parent reading it), then stay busy."""
    os.write(1, f"WORKER {os.getpid()}\n".encode())  # one write: lines of workers never mix
    time.sleep(seconds)
    return seconds


# --- progress, callbacks and asyncio -----------------------------------------------------------


def fail_on_odd(x: int) -> int:
    """Raise ValueError for odd numbers, return the number otherwise."""
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x


def fail_if_exists(path: str) -> None:
    """An initializer that works until the file ``path`` appears (for workers that join later)."""
    if os.path.exists(path):
        raise RuntimeError(f"{path} exists")


def held_blob_count() -> int:
    """How many blobs (large values of functions) this worker process holds."""
    from jobpool._process import _in_worker

    return len(_in_worker.BLOBS)


def say_then_exit(code: int) -> None:
    """An initializer that explains itself on stderr, then dies before the worker can report."""
    print("loading the model from /nowhere", file=sys.stderr)
    sys.stderr.write("giving up\n")
    sys.stderr.flush()
    os._exit(code)


def kill_self_in_initializer() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def task_states(marker: str, dask_worker: Any = None) -> dict[str, str]:
    """On a Dask worker (``client.run``): the state of each task whose key contains ``marker``."""
    tasks = dask_worker.state.tasks
    return {str(key): task.state for key, task in tasks.items() if marker in str(key)}


# --- programs a job starts (external processes), for the tests of stopping a job's tree -------

# Each shape is one program (tree) a job may leave running; its value is the shell command.
# ``echo $!`` prints the pid of a program started in the background, for the test to watch.
PROGRAM_SHAPES = {
    "sleep": "exec sleep 300",  # the job's own child
    "grandchild": "sleep 300 & echo $!; wait",  # a child that started a child
    "double-fork": "setsid sleep 300 & echo $!",  # detached: its own session, parent gone
    # Keeps starting programs, in its group and detached, until it is killed.
    "forker": "while :; do sleep 300 & setsid sleep 300 & echo started; sleep 0.01; done",
    "orphan": "sleep 300 & echo $!",  # its parent gone, but in the worker's group still
    # Keeps starting programs in its group only, until it is killed.
    "group-forker": "while :; do sleep 300 & echo started; sleep 0.01; done",
}


def start_programs(shapes: Any, env: dict[str, str]) -> list[int]:
    """Start one program per shape (see PROGRAM_SHAPES; "setsid" is a child in a session of its
    own), ``env`` added to their environment; return every pid the job knows of.

    Each pid is of a program already running: the job waited for its launcher to report it.
    """
    import subprocess

    environ = {**os.environ, **env}
    pids: list[int] = []
    for shape in shapes:
        # Not holding the worker's stdout or stderr: a test reading a parent's output to its
        # end would otherwise wait for every program the job leaves.
        quiet = {"stdin": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if shape == "setsid":
            child = subprocess.Popen(
                ["sleep", "300"],
                env=environ,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                **quiet,
            )
            pids.append(child.pid)
            continue
        child = subprocess.Popen(
            ["sh", "-c", PROGRAM_SHAPES[shape]], env=environ, stdout=subprocess.PIPE, **quiet
        )
        assert child.stdout is not None
        detached = shape in ("double-fork", "orphan")
        if not detached:
            pids.append(child.pid)
        if shape in ("forker", "group-forker"):
            for _ in range(10):  # it is forking by now, and goes on
                child.stdout.readline()
        elif shape != "sleep":
            pids.append(int(child.stdout.readline()))
        if detached:
            child.wait()  # the launcher is gone: the program was re-parented (worker or init)
    for pid in pids:
        _wait_until_marked(pid, env)
    return pids


def _wait_until_marked(pid: int, env: dict[str, str]) -> None:
    """Until ``pid`` shows ``env`` in /proc (not while it is half-way through exec, when its
    environment reads empty), so that a test looking for it finds it."""
    entries = {f"{name}={value}".encode() for name, value in env.items()}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entries <= set(f.read().split(b"\0")):
                    return
        except OSError:
            return  # gone: the test will see that
        time.sleep(0.001)


def programs_at_gate(
    address: str, tag: Any, shapes: Any, env: dict[str, str], hold: bool = True
) -> list[int]:
    """Start programs (``start_programs``), report ``<tag>:<pid>,<pid>...`` to the test's
    StartGate, and (``hold``) wait there, as a job that is still running."""
    pids = start_programs(shapes, env)
    gate_job(address, f"{tag}:{','.join(map(str, pids))}", hold=hold)
    return pids


def programs_then_sleep(shapes: Any, env: dict[str, str], seconds: float = 120) -> None:
    """For a parent reading stdout: start programs, print ``PROGRAMS <pid>...``, stay busy."""
    pids = start_programs(shapes, env)
    os.write(1, ("PROGRAMS " + " ".join(map(str, pids)) + "\n").encode())
    time.sleep(seconds)


def keep_starting_programs(address: str, env: dict[str, str], detach: bool = True) -> None:
    """Start ``sleep`` programs from the job itself without end, detached ones among them
    (``detach``); report to the test's StartGate once ten are running."""
    import subprocess

    environ = {**os.environ, **env}
    started = 0
    while True:
        subprocess.Popen(
            ["sleep", "300"],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=detach and started % 2 == 1,
        )
        started += 1
        if started == 10:
            gate_job(address, "looping", hold=False)


def reap_what_was_adopted() -> dict[str, Any]:
    """In a worker: leave zombies of every kind, let the worker's reaper look once, report.

    Two children of the worker's own (one in a session of its own) that it has not waited for,
    and two programs it adopted: one a session leader left (it cannot be the worker's own child),
    one a plain shell left (it could be, as far as the kernel shows).
    """
    import subprocess

    from jobpool._process._stopping import AdoptedZombies
    from jobpool._process._tree import read_stat

    own = subprocess.Popen(["sh", "-c", "exit 7"])
    own_session = subprocess.Popen(["sh", "-c", "exit 9"], start_new_session=True)
    adopted = {}
    for kind, command in (("from a session", ["setsid", "sh"]), ("from a shell", ["sh"])):
        launcher = subprocess.Popen([*command, "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE)
        assert launcher.stdout is not None
        adopted[kind] = int(launcher.stdout.readline())
        launcher.wait()  # gone: its sleep is re-parented to this worker
        os.kill(adopted[kind], signal.SIGKILL)
    for pid in (own.pid, own_session.pid, *adopted.values()):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # until it has exited; reaps nothing
    AdoptedZombies().tick(time.monotonic())
    report = {kind: read_stat(pid) for kind, pid in adopted.items()}
    report["own"] = own.wait()
    report["own session"] = own_session.wait()
    os.waitpid(adopted["from a shell"], 0)  # ours to clean up
    return report


def worker_placement(_: Any = None) -> tuple[bool, bool]:
    """(whether this worker leads its own process group, whether its stdin is a terminal)."""
    return os.getpgid(0) == os.getpid(), os.isatty(0)


# --- large data (test_large_data.py) -----------------------------------------------------------


def describe(value: Any) -> tuple[str, Any]:
    """What a job received: type name, and whether it may be written (numpy / memoryview)."""
    flags = getattr(value, "flags", None)
    writable = flags.writeable if flags is not None else None
    if isinstance(value, memoryview):
        writable = not value.readonly
    return type(value).__name__, writable


def segments_mapped_here(value: Any = None) -> int:
    """How many shared-memory segments this worker maps while it runs (its argument's, say)."""
    import re

    # A memfd, or a file in a jobpool directory (named segments, without memfd).
    segment = re.compile(r"/memfd:jobpool|/jobpool-\d+-[0-9a-f]+/")
    with open("/proc/self/maps") as f:
        return sum(bool(segment.search(line)) for line in f)


def write_first(value: Any) -> Any:
    """Write into the argument in place and return it."""
    value[0] = 7
    return value


def ones_array(n: int, dtype: str = "float64", order: str = "C") -> Any:
    import numpy

    return numpy.ones(n, dtype=dtype) if isinstance(n, int) else numpy.ones(n, dtype, order)


def bytes_of(n: int, kind: str = "bytes") -> Any:
    data = bytes(range(256)) * (n // 256)
    return bytearray(data) if kind == "bytearray" else data


def gate_then_return(address: str, tag: Any, value: Any) -> int:
    """Wait at the gate holding a (large) argument; its size once released."""
    gate_job(address, tag)
    return len(memoryview(value).cast("B"))


def gate_then_ones(address: str, tag: Any, n: int) -> Any:
    """Wait at the gate, then return a (large) array of ``n`` float64 ones."""
    gate_job(address, tag)
    return ones_array(n)


def gate_then_die(address: str, tag: Any, value: Any) -> None:
    """Wait at the gate holding a (large) argument, then kill this worker with SIGKILL."""
    gate_job(address, tag)
    os.kill(os.getpid(), signal.SIGKILL)


# --- results that cannot be loaded in the caller ------------------------------------------------

WORKER_ONLY_MODULE = "jobpool_tests_worker_only"


def worker_only_object(x: Any) -> Any:
    """An object of a class whose module exists only in this worker process: its pickle names
    ``jobpool_tests_worker_only.Thing``, which the caller cannot import."""
    import types

    module = sys.modules.get(WORKER_ONLY_MODULE)
    if module is None:
        module = types.ModuleType(WORKER_ONLY_MODULE)
        module.Thing = type("Thing", (), {"__module__": WORKER_ONLY_MODULE})  # type: ignore[attr-defined]
        sys.modules[WORKER_ONLY_MODULE] = module
    thing = module.Thing()
    thing.x = x
    return thing


def _refuse_to_rebuild(x: Any) -> Any:
    raise RuntimeError(f"refusing to rebuild {x!r} here")


class RebuildFails:
    """Pickles fine; rebuilding it raises (wherever it is loaded)."""

    def __init__(self, x: Any) -> None:
        self.x = x

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_rebuild, (self.x,))


def unloadable_at(x: int, bad: int = 500, how: str = "module") -> Any:
    """``x``, except at ``bad``: a result the caller cannot load (``how``: its class's module
    exists only in the worker, or rebuilding it raises)."""
    if x != bad:
        return x
    return worker_only_object(x) if how == "module" else RebuildFails(x)


def lock_at(x: int, bad: int = 500) -> Any:
    """``x``, except at ``bad``: a lock, which cannot be pickled."""
    return threading.Lock() if x == bad else x


def big_text_under_memory_limit(size: int, headroom: int) -> str:
    """A ``size``-character str made under an address-space limit ``headroom`` bytes above what
    this process holds with it: pickling it (one more copy) then runs out of memory."""
    import resource

    text = "x" * size
    with open("/proc/self/statm") as statm:
        held = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (held + headroom, resource.RLIM_INFINITY))
    return text


def raise_long_message(size: int) -> None:
    raise ValueError("x" * size)


def long_text(size: int) -> str:
    return "x" * size


def with_large_buffer(fn: Any, x: Any, size: int) -> tuple[Any, bytes]:
    """``(fn(x), size bytes)``: a result that travels through shared memory."""
    return fn(x), bytes_of(size)


def nested_worker_only(x: Any) -> list[Any]:
    """A result whose part ``[1]['x']`` cannot be loaded in the caller."""
    return [x, {"x": worker_only_object(x), "y": 2}]


def raise_module_not_found() -> None:
    raise ModuleNotFoundError("No module named 'raised_by_the_job'")


class ReduceRaises:
    """Its own pickling code raises (not a type pickle refuses)."""

    def __reduce__(self) -> Any:
        raise ValueError("not in this state")


class Valued:
    """An ordinary object with state, equal by its state."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Valued and other.value == self.value

    def __hash__(self) -> int:
        return hash(repr(self.value))


class StateRefused:
    """Pickles with its state; setting that state raises when loaded."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __setstate__(self, state: Any) -> None:
        raise RuntimeError("refusing this state")


class Items(list):  # type: ignore[type-arg]
    """A list of the caller's own kind: pickle fills it by calling its extend()."""


# --- jobs that take other jobs' results (futures as arguments, issue 26) -----------------------


def add_all(*values: int) -> int:
    """1 + the sum of ``values``: a node of a test DAG, whose result says which inputs it got."""
    return 1 + sum(values)


def nested_sum(value: Any) -> int:
    """The sum of the ints in nested lists, tuples, dicts (values) and sets."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(nested_sum(v) for v in value.values())
    return sum(nested_sum(v) for v in value)


def gate_then_value(address: str, tag: Any, value: Any) -> Any:
    """Wait at the test's StartGate until released, then return ``value``."""
    gate_job(address, tag)
    return value


def gate_with_input(address: str, tag: Any, value: Any) -> Any:
    """Report ``tag`` to the StartGate (and wait there): the job started with its input."""
    gate_job(address, tag)
    return value


def fail_or_add(fails: bool, *args: Any, values: Any = ()) -> int:
    """A node of the DAG test: raises ValueError if ``fails``, else 1 + the sum of its inputs
    (given as arguments, or nested in ``values``)."""
    if fails:
        raise ValueError("this node fails")
    return 1 + nested_sum(args) + nested_sum(values)


def dask_dependencies(dask_scheduler: Any = None) -> dict[str, list[str]]:
    """On the Dask scheduler: each task's key and the keys of the tasks it depends on."""
    return {
        str(key): [str(d.key) for d in task.dependencies]
        for key, task in dask_scheduler.tasks.items()
    }


# --- retries: jobs that fail their first runs, counted by marker files --------------------------


def run_number(directory: str, tag: Any) -> int:
    """Record one more run of job ``tag`` (a file ``<tag>.<n>``); this run's number, from 0."""
    n = 0
    while True:
        try:
            fd = os.open(
                os.path.join(directory, f"{tag}.{n}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        return n


def runs_of(directory: str) -> dict[str, int]:
    """How many times each tag ran (see :func:`run_number`)."""
    counts: dict[str, int] = {}
    for name in os.listdir(directory):
        tag = name.rsplit(".", 1)[0]
        counts[tag] = counts.get(tag, 0) + 1
    return counts


def fail_first(directory: str, tag: Any, fails: int = 1, result: Any = None) -> Any:
    """Raise ValueError in the first ``fails`` runs of ``tag``, then return ``result``."""
    n = run_number(directory, tag)
    if n < fails:
        raise ValueError(f"{tag}: run {n} fails")
    return tag if result is None else result


def crash_first(directory: str, tag: Any, fails: int = 1) -> Any:
    """End the worker process abruptly in the first ``fails`` runs of ``tag``."""
    if run_number(directory, tag) < fails:
        os._exit(3)
    return tag


def gate_first_run(address: str, directory: str, tag: Any) -> Any:
    """First run: wait at the gate (past a time limit); later runs return ``tag`` at once."""
    if run_number(directory, tag) == 0:
        gate_job(address, tag)
    return tag


def gate_then_fail_first(address: str, directory: str, tag: Any) -> Any:
    """First run: wait at the gate, then raise; later runs return ``tag`` at once."""
    if run_number(directory, tag) == 0:
        gate_job(address, tag)
        raise ValueError(f"{tag}: the first run fails")
    return tag


def always_fail(message: str = "always") -> None:
    raise ValueError(message)


def gate_each_run(address: str, directory: str, tag: Any) -> int:
    """Wait at the gate as ``<tag><run number>`` (so each attempt is told apart); the number."""
    n = run_number(directory, tag)
    gate_job(address, f"{tag}{n}")
    return n


def adopted_state() -> tuple[bool, bool]:
    """In a worker: whether what it holds as received from the script's namespace is what
    adopting its namespace makes of it now, and whether it still says its fork server adopted
    for it (a process it forks must adopt for itself)."""
    from jobpool import _main_globals

    def state() -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(_main_globals._written), dict(_main_globals._received)

    held, flag = state(), _main_globals.adopted_for_forks
    _main_globals._adopt()  # the walk itself, whoever was to make it
    return held == state(), flag


SHARED: dict[str, Any] = {}


def keep_shared(lock: Any, queue: Any, value: Any) -> None:
    """An initializer given multiprocessing objects that travel only at process creation."""
    SHARED.update(lock=lock, queue=queue, value=value)


def add_to_shared(x: int) -> int:
    """Adds ``x`` to the shared value under the shared lock and puts it on the shared queue."""
    with SHARED["lock"]:
        SHARED["value"].value += x
    SHARED["queue"].put(x)
    return x


QUEUE: list[Any] = []


def keep_queue(queue: Any) -> None:
    """An initializer that keeps a multiprocessing queue for the jobs."""
    QUEUE[:] = [queue]


class SlowToPickle:
    """Pickled by a queue's feeder thread, after the job that put it returned: slowly."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(0.3)
        return (int, (self.value,))


def put_slowly(value: int) -> int:
    """Puts ``value`` on the kept queue; it is still being sent when the job returns."""
    QUEUE[0].put(SlowToPickle(value))
    return value
