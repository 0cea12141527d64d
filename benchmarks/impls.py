"""One small adapter per pool implementation, so every workload drives them the same way.

Each adapter opens a pool of ``workers`` workers and offers ``submit`` (one job, a handle with a
result), ``run_all`` (submit every item, then wait for all), ``map`` (the implementation's default
or best-documented bulk API) and ``lazy_map`` (its streaming API, chunksize 1000 where it takes
one). An adapter whose package is missing is reported as skipped, never an error.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.pool
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any, Callable, Optional

from .jobs import sleep_job

LAZY_CHUNK = 1000
SWEEP_CHUNK = 16384  # jobpool's largest adaptive chunk: peers are tried with it too
TIMEOUTS = (TimeoutError, futures.TimeoutError, multiprocessing.TimeoutError)


class NotSupported(Exception):
    """The implementation has no API for this workload."""


class Adapter:
    name = ""
    flavour = ""  # "thread" | "process"
    requires: Optional[str] = None  # the package to import
    submit_api = "submit"
    map_api = "map"
    lazy_api = "map"
    start_method = "fork (default)"

    def __init__(self) -> None:
        self.pool: Any = None

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    @staticmethod
    def result(handle: Any, timeout: Optional[float] = None) -> Any:
        if hasattr(handle, "result"):
            return handle.result(timeout)
        return handle.get(timeout)

    def run_all(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        handles = [self.submit(fn, x) for x in items]
        return [self.result(h) for h in handles]

    #: The chunk sizes a map over tiny items is tried with: ``None`` is the API's own default
    #: (automatic where it has one); each peer is reported at its best (see map_tiny, lazy).
    chunksizes: tuple[Optional[int], ...] = (None,)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items)

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = LAZY_CHUNK
    ) -> Iterator[Any]:
        raise NotSupported(self.name)

    def warm(self, fn: Callable[..., Any], workers: int) -> None:
        """Start every worker and run a few jobs before anything is timed.

        A pool may run the first trivial jobs all on its first worker while the others still
        start (a fork server or spawn takes tens of ms); jobs that sleep long enough to need
        every worker come next, so that no timing includes a worker's start.
        """
        self.run_all(fn, range(4 * workers))
        self.run_all(sleep_job, [0.05] * (2 * workers))

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def terminate(self) -> None:
        self.close()


# --- jobpool ------------------------------------------------------------------------------------


class JobpoolAdapter(Adapter):
    submit_api = "submit"
    map_api = "map"
    lazy_api = "map"

    def __init__(self, backend: str, portable: bool = False) -> None:
        super().__init__()
        self.backend = backend
        self.flavour = backend
        self.portable = portable
        self.name = f"jobpool[{backend}, portable]" if portable else f"jobpool[{backend}]"
        self.start_method = "forkserver (default)" if backend == "process" else "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        from jobpool import Pool, _platform

        if self.portable != _platform.PORTABLE:  # set by run.py from ENVIRONMENT, at start
            raise RuntimeError(
                f"{self.name} measured with JOBPOOL_PORTABLE={int(_platform.PORTABLE)}"
            )
        if self.backend == "process":
            self.pool = Pool(workers, backend="process", start_method=start_method)
        else:
            self.pool = Pool(workers, backend="thread")

    chunksizes = (None, LAZY_CHUNK, SWEEP_CHUNK)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize=chunksize)

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterator[Any]:
        return self.pool.map(fn, items, chunksize=chunksize)

    def terminate(self) -> None:
        self.pool.terminate()


# --- concurrent.futures -------------------------------------------------------------------------


class ThreadPoolExecutorAdapter(Adapter):
    name = "cf.ThreadPoolExecutor"
    flavour = "thread"
    start_method = "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        self.pool = futures.ThreadPoolExecutor(workers)

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterator[Any]:
        return self.pool.map(fn, items)  # type: ignore[no-any-return]


class ProcessPoolExecutorAdapter(Adapter):
    name = "cf.ProcessPoolExecutor"
    flavour = "process"
    map_api = "map(chunksize)"
    lazy_api = "map(chunksize)"
    chunksizes = (LAZY_CHUNK, SWEEP_CHUNK)  # its default, 1, is hopeless on tiny items

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        context = multiprocessing.get_context(start_method) if start_method else None
        self.pool = futures.ProcessPoolExecutor(workers, mp_context=context)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize=chunksize or 1)  # type: ignore[no-any-return]

    lazy_map = map  # type: ignore[assignment]

    def terminate(self) -> None:
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
            process.join(5)


# --- multiprocessing ----------------------------------------------------------------------------


class _MpPoolAdapter(Adapter):
    submit_api = "apply_async"
    map_api = "map(chunksize)"
    lazy_api = "imap(chunksize)"
    chunksizes = (None, LAZY_CHUNK, SWEEP_CHUNK)  # None: map's own len(items)-based choice

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.apply_async(fn, args)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize)  # type: ignore[no-any-return]

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = LAZY_CHUNK
    ) -> Iterator[Any]:
        return self.pool.imap(fn, items, chunksize=chunksize or 1)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join()


class MpPoolAdapter(_MpPoolAdapter):
    name = "mp.Pool"
    flavour = "process"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        self.pool = multiprocessing.get_context(start_method).Pool(workers)


class MpThreadPoolAdapter(_MpPoolAdapter):
    name = "mp.ThreadPool"
    flavour = "thread"
    start_method = "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        self.pool = multiprocessing.pool.ThreadPool(workers)


class JobpoolMpAdapter(_MpPoolAdapter):
    """``jobpool.multiprocessing.Pool`` / ``ThreadPool``: the stdlib's API, jobpool underneath."""

    def __init__(self, flavour: str) -> None:
        super().__init__()
        self.flavour = flavour
        self.name = "jobpool.mp.Pool" if flavour == "process" else "jobpool.mp.ThreadPool"
        self.start_method = "forkserver (default)" if flavour == "process" else "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        from jobpool.multiprocessing import Pool, ThreadPool

        if self.flavour == "process":
            self.pool = Pool(workers, context=start_method)
        else:
            self.pool = ThreadPool(workers)


# --- loky ---------------------------------------------------------------------------------------


class LokyAdapter(Adapter):
    name = "loky"
    flavour = "process"
    requires = "loky"
    submit_api = "get_reusable_executor().submit"
    map_api = "map(chunksize)"
    lazy_api = "map(chunksize)"
    start_method = "loky (fork+exec)"
    chunksizes = (LAZY_CHUNK, SWEEP_CHUNK)

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        from loky import get_reusable_executor

        self.pool = get_reusable_executor(max_workers=workers)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize=chunksize or 1)  # type: ignore[no-any-return]

    lazy_map = map  # type: ignore[assignment]

    def terminate(self) -> None:
        self.pool.shutdown(wait=True, kill_workers=True)


# --- mpire --------------------------------------------------------------------------------------


class MpireAdapter(Adapter):
    requires = "mpire"
    submit_api = "apply_async"
    map_api = "map(chunk_size)"
    lazy_api = "imap(chunk_size)"
    chunksizes = (None, LAZY_CHUNK, SWEEP_CHUNK)  # None: its automatic chunk size

    def __init__(self, flavour: str) -> None:
        super().__init__()
        self.flavour = flavour
        self.name = "mpire" if flavour == "process" else "mpire(threading)"
        self.start_method = "fork (default)" if flavour == "process" else "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        from mpire import WorkerPool

        method = "threading" if self.flavour == "thread" else (start_method or "fork")
        self.pool = WorkerPool(n_jobs=workers, start_method=method)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.apply_async(fn, args)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(  # type: ignore[no-any-return]
            fn, items, chunk_size=chunksize, progress_bar=False
        )

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = LAZY_CHUNK
    ) -> Iterator[Any]:
        return self.pool.imap(fn, items, chunk_size=chunksize)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.stop_and_join()

    def terminate(self) -> None:
        self.pool.terminate()


# --- pebble -------------------------------------------------------------------------------------


class PebbleAdapter(Adapter):
    requires = "pebble"
    submit_api = "schedule"
    map_api = "map(chunksize)"
    lazy_api = "map(chunksize)"
    chunksizes = (LAZY_CHUNK, SWEEP_CHUNK)  # its default, 1, is hopeless on tiny items

    def __init__(self, flavour: str) -> None:
        super().__init__()
        self.flavour = flavour
        self.name = "pebble.ProcessPool" if flavour == "process" else "pebble.ThreadPool"
        self.start_method = "fork (default)" if flavour == "process" else "-"

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        import pebble

        if self.flavour == "thread":
            self.pool = pebble.ThreadPool(max_workers=workers)
        else:
            options = {"context": multiprocessing.get_context(start_method)} if start_method else {}
            self.pool = pebble.ProcessPool(max_workers=workers, **options)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.schedule(fn, args=args)

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        return self.pool.map(fn, items, chunksize=chunksize or 1).result()  # type: ignore[no-any-return]

    lazy_map = map  # type: ignore[assignment]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.stop()
        self.pool.join()


# --- joblib -------------------------------------------------------------------------------------


class JoblibAdapter(Adapter):
    requires = "joblib"
    submit_api = "Parallel(batch_size=1)"
    map_api = "Parallel(batch_size)"
    lazy_api = "Parallel(return_as='generator', batch_size)"
    chunksizes = (None, LAZY_CHUNK, SWEEP_CHUNK)  # None: batch_size='auto'

    def __init__(self, flavour: str) -> None:
        super().__init__()
        self.flavour = flavour
        self.backend = "threading" if flavour == "thread" else "loky"
        self.name = f"joblib({self.backend})"
        self.start_method = "loky (fork+exec)" if flavour == "process" else "-"
        self.workers = 1

    def open(self, workers: int, start_method: Optional[str] = None) -> None:
        self.workers = workers

    def _parallel(self, **options: Any) -> Any:
        from joblib import Parallel

        return Parallel(n_jobs=self.workers, backend=self.backend, **options)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotSupported("joblib has no submit()")

    def run_all(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        from joblib import delayed

        return self._parallel(batch_size=1)(delayed(fn)(x) for x in items)  # type: ignore[no-any-return]

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterable[Any]:
        from joblib import delayed

        parallel = self._parallel(batch_size=chunksize or "auto")
        return parallel(delayed(fn)(x) for x in items)  # type: ignore[no-any-return]

    def lazy_map(
        self, fn: Callable[..., Any], items: Iterable[Any], chunksize: Optional[int] = None
    ) -> Iterator[Any]:
        from joblib import delayed

        parallel = self._parallel(return_as="generator", batch_size=chunksize or "auto")
        return parallel(delayed(fn)(x) for x in items)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.backend == "loky":
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)

    def terminate(self) -> None:
        if self.backend == "loky":
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True, kill_workers=True)


FACTORIES: dict[str, Callable[[], Adapter]] = {
    "jobpool[thread]": lambda: JobpoolAdapter("thread"),
    "jobpool[process]": lambda: JobpoolAdapter("process"),
    # The process backend without Linux's fast paths, as on macOS (see ENVIRONMENT).
    "jobpool[process, portable]": lambda: JobpoolAdapter("process", portable=True),
    "cf.ThreadPoolExecutor": ThreadPoolExecutorAdapter,
    "cf.ProcessPoolExecutor": ProcessPoolExecutorAdapter,
    "mp.ThreadPool": MpThreadPoolAdapter,
    "mp.Pool": MpPoolAdapter,
    "jobpool.mp.ThreadPool": lambda: JobpoolMpAdapter("thread"),
    "jobpool.mp.Pool": lambda: JobpoolMpAdapter("process"),
    "loky": LokyAdapter,
    "mpire(threading)": lambda: MpireAdapter("thread"),
    "mpire": lambda: MpireAdapter("process"),
    "pebble.ThreadPool": lambda: PebbleAdapter("thread"),
    "pebble.ProcessPool": lambda: PebbleAdapter("process"),
    "joblib(threading)": lambda: JoblibAdapter("thread"),
    "joblib(loky)": lambda: JoblibAdapter("process"),
}

#: Environment variables an implementation's child process starts with (read at import).
ENVIRONMENT: dict[str, dict[str, str]] = {"jobpool[process, portable]": {"JOBPOOL_PORTABLE": "1"}}

THREAD_IMPLS = [
    "jobpool[thread]",
    "cf.ThreadPoolExecutor",
    "mp.ThreadPool",
    "pebble.ThreadPool",
    "mpire(threading)",
    "joblib(threading)",
]
PROCESS_IMPLS = [
    "jobpool[process]",
    "cf.ProcessPoolExecutor",
    "mp.Pool",
    "loky",
    "mpire",
    "pebble.ProcessPool",
    "joblib(loky)",
]
STDLIB_REFERENCE = {"thread": "cf.ThreadPoolExecutor", "process": "cf.ProcessPoolExecutor"}


def make(name: str) -> Adapter:
    return FACTORIES[name]()


def missing_requirement(name: str) -> Optional[str]:
    """The package ``name`` needs that is not installed, or None."""
    if name.startswith("jobpool"):
        return None if importlib.util.find_spec("jobpool") else "jobpool"
    adapter = make(name)
    if adapter.requires and importlib.util.find_spec(adapter.requires) is None:
        return adapter.requires
    return None


def flavour_of(name: str) -> str:
    return make(name).flavour
