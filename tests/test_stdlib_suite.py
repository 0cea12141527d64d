"""CPython's own ``test.test_concurrent_futures`` executor tests, run against ``jobpool.Pool``.

The test classes are built from the mixins of the *installed* stdlib test package (Python 3.13+)
with an ``executor_type`` that makes a jobpool Pool on the thread backend, or on the process
backend under the forkserver and fork start methods. Only cases that inspect the stdlib
executors' internals (or test stdlib-only behaviour) are excluded; each exclusion is a skip with
its reason, so ``pytest -rs`` lists them. A few cases that hard-code a stdlib class in a child
interpreter's script are *ported*: the same script with ``jobpool.Pool`` in it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Optional

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

from conftest import skipped_case
from jobpool import Pool


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


class ThreadMixin(util.ExecutorMixin):
    executor_type = ThreadPool


class ForkserverMixin(util.ProcessPoolForkserverMixin):
    executor_type = ProcessPool


class ForkMixin(util.ProcessPoolForkMixin):
    executor_type = ProcessPool


PROCESS_MIXINS = {"Forkserver": ForkserverMixin, "Fork": ForkMixin}
ALL_MIXINS = {"Thread": ThreadMixin, **PROCESS_MIXINS}

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
# Not run at all (documented here so the list is complete):
#  * test_deadlock.py: injects crashes into ProcessPoolExecutor's call/result queues and its
#    _ExecutorManagerThread, and expects BrokenProcessPool; jobpool's crash handling is covered
#    by tests/test_faults.py.
#  * test_init.FailingInitializerResourcesTest: runs the stdlib's own generated classes and
#    stops the stdlib resource tracker.
#  * test_future.py: tests concurrent.futures.Future alone, no executor.
#  * ThreadPoolShutdownTest's own methods (test_threads_terminate, test_context_manager_shutdown,
#    test_del_shutdown, test_shutdown_no_wait, test_thread_names_*): executor._threads or a
#    hard-coded ThreadPoolExecutor; the shared ExecutorShutdownTest cases run instead.


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
    if name.startswith(SLOW_LABELS):  # Fork... and Forkserver...
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
    ctx = getattr(test, "ctx", None)
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
        _rc, out, err = assert_python_ok(
            "-c",
            """if True:
            from jobpool import Pool
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = Pool(backend="thread")
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

for _label, _mixin in ALL_MIXINS.items():
    _thread = _label == "Thread"
    _build(
        f"{_label}ExecutorTest",
        (
            (test_thread_pool.ThreadPoolExecutorTest,)
            if _thread
            else (test_process_pool.ProcessPoolExecutorTest, _mixin, util.BaseTestCase)
        ),
        {**EXCLUDED_COMMON, **(EXCLUDED_THREAD if _thread else EXCLUDED_PROCESS)},
        **({"executor_type": ThreadPool} if _thread else {}),
    )
    _build(
        f"{_label}WaitTest",
        (
            (test_wait.ThreadPoolWaitTests,)
            if _thread
            else (test_wait.WaitTests, _mixin, util.BaseTestCase)
        ),
        {},
        **({"executor_type": ThreadPool} if _thread else {}),
    )
    _build(
        f"{_label}AsCompletedTest",
        (test_as_completed.AsCompletedTests, _mixin, util.BaseTestCase),
        {},
    )
    _build(
        f"{_label}ShutdownTest",
        (
            PortedShutdownCases,
            *((PortedThreadShutdownCases,) if _thread else ()),
            *(() if _thread else (test_shutdown.ProcessPoolShutdownTest,)),
            test_shutdown.ExecutorShutdownTest,
            _mixin,
            util.BaseTestCase,
        ),
        {} if _thread else EXCLUDED_PROCESS_SHUTDOWN,
    )
    _build(
        f"{_label}InitializerTest",
        (test_init.InitializerMixin, _mixin, util.BaseTestCase),
        {},
    )
    _build(
        f"{_label}FailingInitializerTest",
        (FailingInitializerAdapter, test_init.FailingInitializerMixin, _mixin, util.BaseTestCase),
        {},
    )

del _label, _mixin, _thread
