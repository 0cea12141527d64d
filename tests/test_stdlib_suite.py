"""CPython's own ``test.test_concurrent_futures`` executor tests, run against jobpool.

Twice: against ``jobpool.Pool`` itself (classes named ``Thread...``, ``Forkserver...``,
``Fork...``) and against the stdlib dialect ``jobpool.concurrent.futures``'s
``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` (the same names with ``Dialect`` in front).
The test classes are built from the mixins of the *installed* stdlib test package (Python 3.13+)
with an ``executor_type`` that makes a jobpool pool on the thread backend, or on the process
backend under the forkserver and fork start methods. The stdlib cases that build
``concurrent.futures.ThreadPoolExecutor`` by name run with that name bound to jobpool's. Only
cases that inspect the stdlib executors' internals (or test stdlib-only behaviour) are
excluded; each exclusion is a skip with its reason, so ``pytest -rs`` lists them. A few cases
that hard-code a stdlib class in a child interpreter's script are *ported*: the same script with
jobpool's class in it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional
from unittest import mock

import pytest

if sys.version_info < (3, 13):
    pytest.skip(
        "CPython's test.test_concurrent_futures package (split into the mixins this adapter "
        "uses) is only installed with Python 3.13+",
        allow_module_level=True,
    )

try:
    from test.support.script_helper import assert_python_ok
    from test.test_concurrent_futures import (
        test_as_completed,
        test_init,
        test_process_pool,
        test_shutdown,
        test_thread_pool,
        test_wait,
        util,
    )
except ImportError as exc:  # a Python built without its test package
    pytest.skip(f"the stdlib test package is not installed: {exc}", allow_module_level=True)

import concurrent.futures

from conftest import skipped_case
from jobpool import Pool
from jobpool.concurrent import futures as dialect


class StdlibNames(Pool):
    """The one stdlib internal the executor tests poll: ``_broken``, set once the pool broke."""

    @property
    def _broken(self) -> Any:
        return self._intake.broken


class ThreadPool(StdlibNames):
    """``ThreadPoolExecutor``'s signature over ``Pool(backend="thread")``."""

    def __init__(self, max_workers: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(max_workers, backend="thread", **kwargs)


class ProcessPool(StdlibNames):
    """``ProcessPoolExecutor``'s signature over ``Pool(backend="process")``."""

    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Any = None,
        max_tasks_per_child: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            max_workers,
            backend="process",
            mp_context=mp_context,
            max_jobs_per_worker=max_tasks_per_child,
            **kwargs,
        )


class DialectThreadPool(StdlibNames, dialect.ThreadPoolExecutor):
    """jobpool's ``ThreadPoolExecutor``, and the threads the stdlib's tests count."""

    @property
    def _threads(self) -> set[threading.Thread]:
        return set(self._backend._threads)  # type: ignore[attr-defined]


class DialectProcessPool(StdlibNames, dialect.ProcessPoolExecutor):
    """jobpool's ``ProcessPoolExecutor``."""


def _mixins(thread_pool: type, process_pool: type) -> dict[str, type]:
    return {
        "Thread": type("ThreadMixin", (util.ExecutorMixin,), {"executor_type": thread_pool}),
        "Forkserver": type(
            "ForkserverMixin", (util.ProcessPoolForkserverMixin,), {"executor_type": process_pool}
        ),
        "Fork": type("ForkMixin", (util.ProcessPoolForkMixin,), {"executor_type": process_pool}),
    }


# Class name prefix -> (label -> mixin): the Pool adapters, and the stdlib dialect's classes.
TARGETS = {
    "": _mixins(ThreadPool, ProcessPool),
    "Dialect": _mixins(DialectThreadPool, DialectProcessPool),
}

# --- exclusions: (test method name -> reason), per group of test classes ----------------------

INTERNALS = "inspects ProcessPoolExecutor/ThreadPoolExecutor internals"
EXCLUDED_COMMON = {
    "test_max_workers_negative": (
        "asserts the stdlib's exact message 'max_workers must be greater than 0'; jobpool "
        "raises ValueError('workers must be at least 1, got 0')"
    ),
}
EXCLUDED_THREAD = {
    "test_default_workers": f"{INTERNALS} (executor._max_workers)",
    "test_saturation": f"{INTERNALS} (executor._threads, executor._max_workers)",
    "test_idle_thread_reuse": f"{INTERNALS} (executor._threads)",
    "test_hang_global_shutdown_lock": (
        "tests stdlib ProcessPoolExecutor's _global_shutdown_lock after fork; it never builds "
        "the executor under test"
    ),
}
EXCLUDED_PROCESS = {
    "test_killed_child": (
        f"{INTERNALS} (executor._processes), and expects the whole pool to break "
        "(BrokenProcessPool); jobpool fails only the crashed job with WorkerCrashedError and "
        "replaces the worker (tests/test_faults.py)"
    ),
    "test_traceback": (
        "expects the private class concurrent.futures.process._RemoteTraceback as __cause__; "
        "jobpool attaches jobpool.RemoteTraceback, with the same .tb text"
    ),
    "test_saturation": f"{INTERNALS} (executor._processes, executor._max_workers)",
    "test_idle_process_reuse_one": f"{INTERNALS} (executor._processes)",
    "test_idle_process_reuse_multiple": f"{INTERNALS} (executor._processes)",
    "test_max_tasks_per_child": f"{INTERNALS} (executor._processes)",
    "test_max_tasks_per_child_defaults_to_spawn_context": f"{INTERNALS} (executor._mp_context)",
    "test_python_finalization_error": (
        "patches threading._start_joinable_thread to break ProcessPoolExecutor's own queue "
        "feeder thread"
    ),
}
EXCLUDED_PROCESS_SHUTDOWN = {
    "test_cancel_futures": (
        "assumes shutdown(cancel_futures=True) right after submit finds some jobs already taken "
        "(ProcessPoolExecutor moves work items into its call queue at once, before any worker "
        "is up); jobpool hands a job over only to a ready worker, so while the workers still "
        "start every job is pending and is, correctly, cancelled"
    ),
    "test_processes_terminate": f"{INTERNALS} (executor._processes)",
    "test_context_manager_shutdown": f"{INTERNALS} (e._processes of a ProcessPoolExecutor)",
    "test_del_shutdown": f"{INTERNALS} (_executor_manager_thread, _call_queue, _processes)",
    "test_shutdown_no_wait": f"{INTERNALS} (_executor_manager_thread, _call_queue, _processes)",
}
# The dialect's ThreadPoolExecutor has the stdlib's ``_max_workers`` and the adapter above its
# ``_threads``, and raises the stdlib's message for max_workers <= 0: these run against it.
RUN_ON_DIALECT_THREADS = {
    "test_max_workers_negative",
    "test_default_workers",
    "test_saturation",
    "test_idle_thread_reuse",
}
RUN_ON_DIALECT_PROCESSES = {"test_max_workers_negative"}
# Not run at all (documented here so the list is complete):
#  * test_deadlock.py: injects crashes into ProcessPoolExecutor's call/result queues and its
#    _ExecutorManagerThread, and expects BrokenProcessPool; jobpool's crash handling is covered
#    by tests/test_faults.py.
#  * test_init.FailingInitializerResourcesTest: runs the stdlib's own generated classes and
#    stops the stdlib resource tracker.
#  * test_future.py: tests concurrent.futures.Future alone, no executor.
#  * ThreadPoolShutdownTest's own methods (test_threads_terminate, test_context_manager_shutdown,
#    test_del_shutdown, test_shutdown_no_wait, test_thread_names_*) against jobpool.Pool:
#    executor._threads or a hard-coded ThreadPoolExecutor; they run against the dialect's
#    ThreadPoolExecutor (DialectThreadShutdownTest), with that name bound to it.


# Known jobpool bugs the stdlib suite finds: strict expected failures, so a fix shows up.
KNOWN_BUGS: dict[str, str] = {}


# The process start methods run the whole suite again: slow, run by CI (see conftest.py). The
# thread classes run in a plain `pytest` too.
SLOW_LABELS = ("Fork",)

# Cases that wait seconds by design (the stdlib's own sleeps and timeouts): on threads too, they
# run with the slow tests, so a plain `pytest` stays short.
SLOW_CASES = frozenset(
    {
        "test_map_timeout",
        "test_first_exception",
        "test_duplicate_futures",
        "test_first_exception_one_already_failed",
        "test_first_exception_some_already_complete",
        "test_first_completed_some_already_completed",
        "test_first_completed",
    }
)


def _build(name: str, bases: tuple[type, ...], excluded: dict[str, str], **extra: Any) -> None:
    namespace: dict[str, Any] = {"__module__": __name__, **extra}
    if name.removeprefix("Dialect").startswith(SLOW_LABELS):  # Fork... and Forkserver...
        namespace["pytestmark"] = [pytest.mark.slow]
    for method in SLOW_CASES:
        inherited = next((getattr(b, method) for b in bases if hasattr(b, method)), None)
        if inherited is not None:
            namespace[method] = pytest.mark.slow(inherited)
    for method, reason in excluded.items():
        namespace[method] = skipped_case(reason)
    for method, reason in KNOWN_BUGS.items():
        inherited = next((getattr(b, method) for b in bases if hasattr(b, method)), None)
        if inherited is not None:
            namespace[method] = pytest.mark.xfail(reason=reason, strict=True)(inherited)
    globals()[name] = type(name, bases, namespace)


# --- ports of the child-interpreter cases that hard-code a stdlib executor ----------------------


def _pool_expr(test: Any, workers: int) -> str:
    """The pool the test's class is about, as a child interpreter's script builds it."""
    ctx = getattr(test, "ctx", None)
    if type(test).__name__.startswith("Dialect"):
        if ctx is None:
            return f"futures.ThreadPoolExecutor({workers})"
        return f"futures.ProcessPoolExecutor({workers}, mp_context={ctx!r})"
    if ctx is None:
        return f"Pool({workers}, backend='thread')"
    return f"Pool({workers}, backend='process', start_method={ctx!r})"


def _quiesce(test: Any) -> None:
    """Shut the test's own pool down before starting a child interpreter.

    With the fork start method, a worker forked while ``subprocess`` has the child's pipes open
    inherits their write ends, and ``communicate()`` then waits for that worker to exit: the
    setUp pool may still be starting its workers in the background, so it goes first.
    """
    test.executor.shutdown(wait=True)


class PortedShutdownCases:
    """test_shutdown's child-interpreter cases, with ``jobpool.Pool`` in the script."""

    def test_interpreter_shutdown(self: Any) -> None:
        _quiesce(self)
        # A pool left open at exit finishes its queued job before the interpreter goes.
        _rc, out, err = assert_python_ok(
            "-c",
            f"""if 1:
            from jobpool import Pool
            from jobpool.concurrent import futures
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = {_pool_expr(self, 5)}
                t.submit(sleep_and_print, 1.0, "apple")
            """,
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_submit_after_interpreter_shutdown(self: Any) -> None:
        _quiesce(self)
        _rc, out, err = assert_python_ok(
            "-c",
            f"""if 1:
            import atexit
            @atexit.register
            def run_last():
                try:
                    t.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
                    raise
            from jobpool import Pool
            from jobpool.concurrent import futures
            if __name__ == "__main__":
                t = {_pool_expr(self, 5)}
                t.submit(id, 42).result()
            """,
        )
        self.assertIn("RuntimeError: cannot schedule new futures", err.decode())
        self.assertEqual(out.strip(), b"runtime-error")

    def test_hang_gh83386(self: Any) -> None:
        """shutdown(wait=False) doesn't hang at exit with running futures (the stdlib skips
        this for ProcessPoolExecutor, which hangs; jobpool runs it on both backends)."""
        _quiesce(self)
        _rc, out, err = assert_python_ok(
            "-c",
            f"""if True:
            from jobpool import Pool
            from jobpool.concurrent import futures
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = {_pool_expr(self, 3)}
                t.submit(sleep_and_print, 1.0, "apple")
                t.shutdown(wait=False)
            """,
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")


class PortedThreadShutdownCases:
    def test_cancel_futures_wait_false(self: Any) -> None:
        _quiesce(self)
        pool = (
            "futures.ThreadPoolExecutor()"
            if type(self).__name__.startswith("Dialect")
            else "Pool(backend='thread')"
        )
        _rc, out, err = assert_python_ok(
            "-c",
            f"""if True:
            from jobpool import Pool
            from jobpool.concurrent import futures
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = {pool}
                t.submit(sleep_and_print, .1, "apple")
                t.shutdown(wait=False, cancel_futures=True)
            """,
        )
        self.assertFalse(err)
        self.assertIn(out.strip(), [b"apple", b""])


class FailingInitializerAdapter:
    """The stdlib checks that its own workers *log* the initializer's error on the
    'concurrent.futures' logger; jobpool reports it in the InitializerError instead (and no
    queue for log records is needed), so that is what is checked."""

    def setUp(self: Any) -> None:
        self.log_queue = None
        self.executor_kwargs = dict(initializer=test_init.init_fail)
        util.ExecutorMixin.setUp(self)

    @contextlib.contextmanager
    def _assert_logged(self: Any, msg: str) -> Iterator[None]:
        yield
        self.assertIn(msg, str(self.executor._broken))


# --- the test classes ---------------------------------------------------------------------------


class DialectThreadName:
    """While a case runs, ``concurrent.futures.ThreadPoolExecutor`` (which it calls by name) is
    jobpool's; so is the executor class its child interpreters import."""

    def setUp(self: Any) -> None:
        patcher = mock.patch.object(concurrent.futures, "ThreadPoolExecutor", DialectThreadPool)
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()  # type: ignore[misc]


def _classes(prefix: str, mixins: dict[str, type]) -> None:
    for label, mixin in mixins.items():
        thread = label == "Thread"
        name = f"{prefix}{label}"
        executor_type = {"executor_type": mixin.executor_type} if thread else {}  # type: ignore[attr-defined]
        excluded = {**EXCLUDED_COMMON, **(EXCLUDED_THREAD if thread else EXCLUDED_PROCESS)}
        if prefix:
            runs = RUN_ON_DIALECT_THREADS if thread else RUN_ON_DIALECT_PROCESSES
            excluded = {k: v for k, v in excluded.items() if k not in runs}
        _build(
            f"{name}ExecutorTest",
            (
                (test_thread_pool.ThreadPoolExecutorTest,)
                if thread
                else (test_process_pool.ProcessPoolExecutorTest, mixin, util.BaseTestCase)
            ),
            excluded,
            **executor_type,
        )
        _build(
            f"{name}WaitTest",
            (
                (test_wait.ThreadPoolWaitTests,)
                if thread
                else (test_wait.WaitTests, mixin, util.BaseTestCase)
            ),
            {},
            **executor_type,
        )
        _build(
            f"{name}AsCompletedTest",
            (test_as_completed.AsCompletedTests, mixin, util.BaseTestCase),
            {},
        )
        if thread and prefix:  # the stdlib's own thread shutdown cases, on jobpool's class
            shutdown_bases: tuple[type, ...] = (
                PortedShutdownCases,
                PortedThreadShutdownCases,
                DialectThreadName,
                test_shutdown.ThreadPoolShutdownTest,
            )
        elif thread:
            shutdown_bases = (
                PortedShutdownCases,
                PortedThreadShutdownCases,
                test_shutdown.ExecutorShutdownTest,
                mixin,
                util.BaseTestCase,
            )
        else:
            shutdown_bases = (
                PortedShutdownCases,
                test_shutdown.ProcessPoolShutdownTest,
                test_shutdown.ExecutorShutdownTest,
                mixin,
                util.BaseTestCase,
            )
        _build(
            f"{name}ShutdownTest",
            shutdown_bases,
            {} if thread else EXCLUDED_PROCESS_SHUTDOWN,
            **({"executor_type": mixin.executor_type} if thread and prefix else {}),  # type: ignore[attr-defined]
        )
        _build(
            f"{name}InitializerTest",
            (test_init.InitializerMixin, mixin, util.BaseTestCase),
            {},
        )
        _build(
            f"{name}FailingInitializerTest",
            (
                FailingInitializerAdapter,
                test_init.FailingInitializerMixin,
                mixin,
                util.BaseTestCase,
            ),
            {},
        )


for _prefix, _mixins_of in TARGETS.items():
    _classes(_prefix, _mixins_of)
del _prefix, _mixins_of
