"""jobpool's fork server: a clean process that forks each new worker straight into ``worker_main``.

Why not the standard library's fork server: each of its children unpickles the caller's
preparation data (its ``sys.path``, ``argv``, working directory...) and a whole
``multiprocessing.Process`` object, runs ``prepare`` and ``Process._bootstrap``, and only then
the worker's own code. In a process just forked each line of cold code costs its page faults
(every object it touches is copied on write): measured per worker on the two-core machine of
the benchmarks, those steps took about 2 ms of CPU and 320 page faults of a worker's 5.7 ms and
870, while ``Pool(processes=50)`` is bound by the CPU its workers' starts take. Here a child
receives only what ``worker_main`` takes and calls it.

What the server imports once (its preload), so that each worker it forks starts warm: the
worker's side of jobpool; the stdlib module that rebuilds the pipes a worker is started with;
and cloudpickle, which loads every function sent by value (a script's own functions, lambdas,
closures): a worker that imported cloudpickle itself at its first such job would spend more CPU
on that import than on its whole start. The modules the caller asked the standard library's fork
server to preload (``multiprocessing.set_forkserver_preload``) are imported too, but never
``__main__``: workers do not need the script (``_start``).

The garbage collector is kept out of the preload: its collections during these imports find
nothing to free and only lengthen the server's start, which the first worker of every pool
waits for. What the imports made is then frozen (``gc.freeze``, as the Python documentation
advises before forking many children): a worker's collections never walk the objects every
worker shares with the server, nor copy the memory pages that hold them. The server also takes
its ``__main__`` namespace as received, once for every worker (``_main_globals.adopt_for_forks``).

The conversation (``_fork_requests`` is the caller's side): one stream socket to the caller.
Each request is a length-prefixed pickle (``worker_main``'s arguments) with descriptors attached
(``SCM_RIGHTS``): the write end of the worker's status pipe, the read end of its parent
sentinel, the caller's resource tracker, then the pipes its arguments name (as
``popen_forkserver._DupFd`` indexes). The reply
is the worker's pid, or a negative errno. When a worker exits the server writes its exit code to
its status pipe, as the standard library's server does, so the caller's ``Process`` works as
usual. The server ends when the caller's end of the socket closes: the caller is gone.

Only the fork server imports this module.
"""

from __future__ import annotations

import gc

_collecting = gc.isenabled()
gc.disable()
try:
    import errno
    import io
    import itertools
    import os
    import pickle
    import select
    import signal
    import socket
    import sys
    from multiprocessing import process, util
    from typing import Any, NoReturn, Optional

    try:  # every worker's arguments name it: its pipes travel as ``popen_forkserver._DupFd``
        import multiprocessing.popen_forkserver  # noqa: F401
        from multiprocessing import forkserver, resource_tracker
    except ImportError:  # no fork server on this system (nor anything running this module)
        pass

    import cloudpickle  # noqa: F401

    from .. import _main_globals
    from . import _in_worker  # noqa: F401
    from ._fork_server_protocol import HEADER, MAX_FDS, REPLY, receive_exactly

finally:
    gc.freeze()
    if _collecting:
        gc.enable()


_START_DIR = ""  # the server's working directory, which it never changes (see serve)


def serve(control_fd: int, preload: list[str]) -> NoReturn:
    """The server's loop: fork a worker for each request, report each worker's exit."""
    global _START_DIR
    _START_DIR = os.getcwd()
    for name in preload:
        try:
            __import__(name)
        except ImportError:  # as the standard library's server does
            pass
    # The workers' namespace is this server's __main__, which nothing changes after this.
    _main_globals.adopt_for_forks()
    gc.freeze()
    util._close_stdin()  # type: ignore[attr-defined]
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # SIGCHLD must run a handler (not be ignored) so that the wakeup descriptor hears of it.
    handlers: dict[int, Any] = {signal.SIGCHLD: _nothing, signal.SIGINT: signal.SIG_IGN}
    old = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    signal.set_wakeup_fd(wake_w)
    control = socket.socket(fileno=control_fd)
    statuses: dict[int, int] = {}  # worker pid -> write end of its status pipe
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if wake_r in ready:
            _drain(wake_r)
            _reap(statuses)
        if control.fileno() not in ready:
            continue
        try:
            request = _receive(control)
        except OSError as exc:
            _reply(control, -(exc.errno or errno.EIO))
            continue
        if request is None:  # the caller is gone
            os._exit(0)
        payload, fds = request
        if len(fds) < 3:
            _close_all(fds)
            _reply(control, -errno.EINVAL)
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            _close_all(fds)
            _reply(control, -(exc.errno or errno.EAGAIN))
            continue
        if pid == 0:
            code = 1
            try:
                control.close()
                signal.set_wakeup_fd(-1)
                for sig, handler in old.items():
                    signal.signal(sig, handler)
                _close_all([wake_r, wake_w, fds[0], *statuses.values()])
                code = _become_worker(payload, fds[1], fds[2], fds[3:])
            except BaseException:
                try:
                    sys.excepthook(*sys.exc_info())
                    sys.stderr.flush()
                except BaseException:
                    pass
            finally:
                os._exit(code)
        statuses[pid] = fds[0]
        _close_all(fds[1:])
        _reply(control, pid)


def _nothing(*_: Any) -> None:
    pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _reap(statuses: dict[int, int]) -> None:
    """Collect every worker that exited and tell the caller its exit code."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is None:
            continue
        try:
            os.write(fd, REPLY.pack(os.waitstatus_to_exitcode(status)))
        except OSError:  # the caller closed its end: it no longer asks
            pass
        os.close(fd)


def _receive(control: socket.socket) -> Optional[tuple[bytes, list[int]]]:
    """The next request, None at end of file; raises OSError for one that broke off, or that
    lost its descriptors (this process had none free: the kernel drops them), once it is read
    whole, so that the next request starts where it should."""
    first, fds, flags, _ = socket.recv_fds(control, HEADER.size, MAX_FDS)
    if not first and not fds:
        return None
    try:
        header = first + receive_exactly(control, HEADER.size - len(first))
        (size,) = HEADER.unpack(header)
        payload = receive_exactly(control, size)
        if flags & socket.MSG_CTRUNC:
            raise OSError(errno.EMFILE, "the fork server had no descriptor free for a request")
        return payload, fds
    except BaseException:
        _close_all(fds)
        raise


def _reply(control: socket.socket, value: int) -> None:
    try:
        control.sendall(REPLY.pack(value))
    except OSError:  # the caller is gone: the next read says so
        pass


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _become_worker(payload: bytes, parent_sentinel: int, tracker: int, inherited: list[int]) -> int:
    """In the new child: take on the worker's identity, as multiprocessing's bootstrap would
    have, and run ``worker_main`` (which ends the process itself).

    The caller's resource tracker becomes the worker's, as with the standard library's fork
    server: what a job registers there (a named semaphore, a ``SharedMemory`` it made) lives
    as long as the caller, not as long as the worker."""
    resource_tracker._resource_tracker._fd = tracker  # type: ignore[attr-defined]
    forkserver._forkserver._inherited_fds = inherited  # type: ignore[attr-defined]
    stream = io.BytesIO(payload)
    _take_environment(*pickle.load(stream))  # before the rest: it may need the caller's path
    current: Any = process.current_process()
    current._inheriting = True
    try:
        target, args, kwargs, name, authkey, parent_pid, parent_name = pickle.load(stream)
    finally:
        del current._inheriting
    authenticated: Any = process.AuthenticationString  # type: ignore[attr-defined]
    current._config = {**current._config, "authkey": authenticated(authkey)}
    current._name = name
    current._parent_pid = parent_pid
    current._parent_name = parent_name
    process._children = set()  # type: ignore[attr-defined]
    process._process_counter = itertools.count(1)  # type: ignore[attr-defined]
    process._parent_process = process._ParentProcess(  # type: ignore[attr-defined]
        parent_name, parent_pid, parent_sentinel
    )
    util._finalizer_registry.clear()  # type: ignore[attr-defined]
    util._run_after_forkers()  # type: ignore[attr-defined]
    target(*args, **kwargs)
    return 0


def _take_environment(
    path: list[str],
    argv: list[str],
    cwd: Optional[str],
    original_dir: str,
    log_to_stderr: bool,
    log_level: Optional[int],
    start_method: Optional[str],
) -> None:
    """Take what the caller has now (``_fork_requests._environment``) where it differs from
    what the server took at its start: the caller may have changed its path or directory since.
    """
    if sys.path != path:
        sys.path[:] = path
    sys.argv = argv
    if cwd is not None and cwd != _START_DIR:
        os.chdir(cwd)
    process.ORIGINAL_DIR = original_dir  # type: ignore[attr-defined]
    if log_to_stderr:
        util.log_to_stderr()
    if log_level is not None:
        util.get_logger().setLevel(log_level)
    if start_method is not None:
        import multiprocessing

        multiprocessing.set_start_method(start_method, force=True)
