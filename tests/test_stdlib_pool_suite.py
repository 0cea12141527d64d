"""CPython's own ``multiprocessing.Pool`` tests, run against ``jobpool.multiprocessing``.

The ``_TestPool``-family classes of the *installed* ``test._test_multiprocessing`` (Python 3.13+)
are combined with mixins whose ``Pool`` is ``jobpool.multiprocessing.pool.Pool`` under the fork,
forkserver and spawn start methods, or ``jobpool.multiprocessing.dummy.Pool`` (a ``ThreadPool``),
as the stdlib combines them with its own ``multiprocessing.pool.Pool`` and
``multiprocessing.dummy.Pool``. ``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` build
``multiprocessing.Pool(...)`` by name, so while they run that name is jobpool's ``Pool``.

Nothing is left out silently: a case that inspects the stdlib pool's internals, or that asserts
a behaviour jobpool deliberately improves, is a skip whose reason says which (``pytest -rs``
lists them), and where the rest of such a case still applies it is *ported*: the same steps,
with the improved expectation.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import unittest
from collections.abc import Iterator
from typing import Any, Callable
from unittest import mock

import pytest

if sys.version_info < (3, 13):
    pytest.skip(
        "runs the test._test_multiprocessing module installed with Python 3.13+",
        allow_module_level=True,
    )

try:
    import test.support
    from test import _test_multiprocessing as stdlib_tests
    from test.support import script_helper
except ImportError as exc:  # a Python built without its test package
    pytest.skip(f"the stdlib test package is not installed: {exc}", allow_module_level=True)

import multiprocessing

import jobpool
import jobpool.multiprocessing.dummy
import jobpool.multiprocessing.pool
from conftest import assert_no_leftover_processes, skipped_case

sqr = stdlib_tests.sqr
exception_throwing_generator = stdlib_tests.exception_throwing_generator
SayWhenError = stdlib_tests.SayWhenError

START_METHODS = [
    m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()
]


def _mixin(label: str, base: type, pool: Callable[..., Any]) -> type:
    return type(f"{label}Mixin", (base,), {"Pool": staticmethod(pool)})


# Each pool under the name the stdlib's own mixins use: multiprocessing.pool.Pool for processes
# (what multiprocessing.Pool makes), multiprocessing.dummy.Pool for threads.
MIXINS = {
    **{
        m.capitalize(): _mixin(
            m.capitalize(),
            stdlib_tests.ProcessesMixin,
            functools.partial(jobpool.multiprocessing.pool.Pool, context=m),
        )
        for m in START_METHODS
    },
    "Thread": _mixin("Thread", stdlib_tests.ThreadsMixin, jobpool.multiprocessing.dummy.Pool),
}


@pytest.fixture(autouse=True, scope="class")
def no_leftover_processes() -> Iterator[None]:
    """The conftest guard, once per class: ``_TestPool`` keeps one pool for all its cases
    (``setUpClass`` to ``tearDownClass``), so its workers are only gone after the last one."""
    yield
    assert_no_leftover_processes()


# --- exclusions (test method name -> reason) ----------------------------------------------------

INTERNALS = "inspects multiprocessing.Pool internals"
IMPROVED = "asserts a stdlib behaviour jobpool deliberately improves"
EXCLUDED_POOL = {
    "test_make_pool": f"{INTERNALS} (len(p._pool)); ported: same ValueErrors, pool of 3 runs",
    "test_map_unplicklable": (
        f"{IMPROVED}: an argument that cannot be pickled fails at the call with "
        "jobpool.SerializationError (a pickle.PicklingError) naming the item, the pickler's "
        "RuntimeError as its __cause__, instead of that RuntimeError from get(); ported"
    ),
    "test_imap_handle_iterable_exception": (
        f"{IMPROVED}: when the input raises, the stdlib drops the items it had already read "
        "into the chunk it was cutting (item 6 with chunksize 2, items 4-6 with chunksize 4) "
        "and raises early; jobpool runs every item read before the error, then raises it; "
        "ported with those expectations"
    ),
    "test_traceback": (
        "expects multiprocessing.pool.RemoteTraceback as the __cause__; jobpool attaches "
        "jobpool.RemoteTraceback with the same .tb text; ported"
    ),
}
EXCLUDED_WORKER_ERRORS = {
    "test_unpickleable_result": (
        f"{IMPROVED}: the result (a lambda) is pickled with cloudpickle when pickle refuses, "
        "so it comes back instead of failing with MaybeEncodingError; ported with a result "
        "nothing can pickle (a lock): jobpool.SerializationError, and the pool goes on"
    ),
}
EXCLUDED_WORKER_LIFETIME = {
    "test_pool_worker_lifetime": (
        f"{INTERNALS} (p._pool, p._repopulate_pool()); ported: jobs report their worker's pid"
    ),
    "test_worker_finalization_via_atexit_handler_of_multiprocessing": (
        "its child interpreter's script imports multiprocessing.Pool; ported with "
        "jobpool.multiprocessing.Pool"
    ),
}
# Not run at all (listed so that the list is complete):
#  * the _TestPool family's manager flavour (ManagerMixin): it tests manager.Pool, a proxy of a
#    stdlib pool living in a manager process.
#  * TestPoolNotLeakOnFailure: builds multiprocessing.pool.Pool with a fake context whose Process
#    class fails to start (a stdlib internal); worker start failures are covered by
#    tests/test_faults.py.
#  * TestInitializers.test_pool_initializer and MiscTestCase.test_large_pool: not of the
#    _TestPool family; tests/test_multiprocessing.py covers initializers and a 50-process pool.


def _build(name: str, bases: tuple[type, ...], excluded: dict[str, str], **extra: Any) -> None:
    """A test class of ``bases``; an excluded case is skipped unless ``bases[0]`` ports it."""
    namespace: dict[str, Any] = {"__module__": __name__, **extra}
    if name.startswith(("Spawn", "Fork")) and not name.startswith("Forkserver"):
        namespace["pytestmark"] = [pytest.mark.slow]  # run by CI (see conftest.py)
    for method, reason in excluded.items():
        if method not in vars(bases[0]):
            namespace[method] = skipped_case(reason)
    globals()[name] = type(name, bases, namespace)


# --- ports ----------------------------------------------------------------------------------------


class PortedPoolCases:
    """The parts of the excluded ``_TestPool`` cases that still apply, with jobpool's answers."""

    pool: Any
    Pool: Callable[..., Any]
    TYPE: str

    def test_make_pool(self: Any) -> None:
        self.assertRaises(ValueError, self.Pool, -1)
        self.assertRaises(ValueError, self.Pool, 0)
        p = self.Pool(3)
        try:
            self.assertEqual(p.map(sqr, range(3)), [0, 1, 4])
        finally:
            p.close()
            p.join()

    def test_map_unplicklable(self: Any) -> None:
        if self.TYPE == "threads":
            self.skipTest(f"test not appropriate for {self.TYPE}")

        class A:
            def __reduce__(self) -> Any:
                raise RuntimeError("cannot pickle")

        with self.assertRaises(jobpool.SerializationError) as caught:
            self.pool.map(sqr, [A()] * 10)
        self.assertIsInstance(caught.exception.__cause__, RuntimeError)
        self.assertIn("items[0]", str(caught.exception))
        self.assertEqual(self.pool.map(sqr, [1, 2]), [1, 4])  # and the pool goes on

    def test_imap_handle_iterable_exception(self: Any) -> None:
        it = self.pool.imap(sqr, exception_throwing_generator(1, -1), 1)
        self.assertRaises(SayWhenError, it.__next__)
        it = self.pool.imap(sqr, exception_throwing_generator(1, -1), 1)
        self.assertRaises(SayWhenError, it.__next__)

        it = self.pool.imap(sqr, exception_throwing_generator(10, 3), 1)
        for i in range(3):
            self.assertEqual(next(it), i * i)
        self.assertRaises(SayWhenError, it.__next__)

        for chunksize in (2, 4, None):  # every item read before the error runs: 0..6
            it = self.pool.imap(sqr, exception_throwing_generator(20, 7), chunksize)
            for i in range(7):
                self.assertEqual(next(it), i * i)
            self.assertRaises(SayWhenError, it.__next__)
            self.assertRaises(StopIteration, it.__next__)

    def test_traceback(self: Any) -> None:
        if self.TYPE != "processes":
            return
        with self.Pool(1) as p, self.assertRaises(RuntimeError) as caught:
            p.apply(self._test_traceback)
        p.join()
        exc = caught.exception
        self.assertIs(type(exc), RuntimeError)
        self.assertEqual(exc.args, (123,))
        cause = exc.__cause__
        self.assertIsInstance(cause, jobpool.RemoteTraceback)
        self.assertIn("raise RuntimeError(123) # some comment", cause.tb)
        with test.support.captured_stderr() as f1:
            try:
                raise exc
            except RuntimeError:
                sys.excepthook(*sys.exc_info())
        self.assertIn("raise RuntimeError(123) # some comment", f1.getvalue())
        # An error from the input is raised as itself, not as a remote exception.
        with self.Pool(1) as p:
            with self.assertRaises(SayWhenError) as caught:
                p.map(sqr, exception_throwing_generator(1, -1), 1)
            self.assertIs(caught.exception.__cause__, None)
        p.join()


def _return_lock() -> Any:
    return threading.Lock()


class PortedWorkerErrorCases:
    def test_unpickleable_result(self: Any) -> None:
        p = multiprocessing.Pool(2)
        for _ in range(20):
            scratchpad: list[Any] = [None]

            def errback(exc: BaseException, scratchpad: list[Any] = scratchpad) -> None:
                scratchpad[0] = exc

            res = p.apply_async(_return_lock, error_callback=errback)
            self.assertRaises(jobpool.SerializationError, res.get)
            self.assertIsInstance(scratchpad[0], jobpool.SerializationError)
        self.assertEqual(p.map(sqr, range(4)), [0, 1, 4, 9])  # no worker was lost
        p.close()
        p.join()


class PortedWorkerLifetimeCases:
    def test_pool_worker_lifetime(self: Any) -> None:
        p = multiprocessing.Pool(3, maxtasksperchild=10)
        results = [p.apply_async(os.getpid) for _ in range(100)]
        pids = {r.get() for r in results}
        # No worker runs more than 10 jobs, so 100 jobs need at least 10 of them.
        self.assertGreaterEqual(len(pids), 10)
        p.close()
        p.join()

    def test_worker_finalization_via_atexit_handler_of_multiprocessing(self: Any) -> None:
        cmd = f"""if 1:
            from jobpool.multiprocessing import Pool
            problem = None
            class A:
                def __init__(self):
                    self.pool = Pool(processes=1, context={self.start_method!r})
            def test():
                global problem
                problem = A()
                problem.pool.map(float, tuple(range(10)))
            if __name__ == "__main__":
                test()
        """
        rc, _out, _err = script_helper.assert_python_ok("-c", cmd)
        self.assertEqual(rc, 0)


class StdlibPoolName:
    """While a case runs, ``multiprocessing.Pool`` (which it calls by name) is jobpool's."""

    Pool: Callable[..., Any]

    def setUp(self: Any) -> None:
        patcher = mock.patch.object(multiprocessing, "Pool", self.Pool)
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()


# --- the test classes -----------------------------------------------------------------------------

for _label, _mixin_class in MIXINS.items():
    _build(
        f"{_label}TestPool",
        (PortedPoolCases, stdlib_tests._TestPool, _mixin_class, unittest.TestCase),
        EXCLUDED_POOL,
    )
    if _label == "Thread":
        continue  # the two classes below are for processes only (ALLOWED_TYPES)
    _build(
        f"{_label}TestPoolWorkerErrors",
        (
            PortedWorkerErrorCases,
            StdlibPoolName,
            stdlib_tests._TestPoolWorkerErrors,
            _mixin_class,
            unittest.TestCase,
        ),
        EXCLUDED_WORKER_ERRORS,
    )
    _build(
        f"{_label}TestPoolWorkerLifetime",
        (
            PortedWorkerLifetimeCases,
            StdlibPoolName,
            stdlib_tests._TestPoolWorkerLifetime,
            _mixin_class,
            unittest.TestCase,
        ),
        EXCLUDED_WORKER_LIFETIME,
        start_method=_label.lower(),
    )

del _label, _mixin_class
