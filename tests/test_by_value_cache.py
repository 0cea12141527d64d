"""The cache of by-value pickles (``__main__`` functions, lambdas): fast, and never stale.

Each test builds functions in a fresh namespace that stands in for a script's ``__main__``,
caches a pickle, changes one thing the pickle is made from, and checks the cache lets go. The
last test runs a real script, so the functions really live in ``__main__``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from jobpool._process._by_value import ByValueCache


def define(source: str, **namespace: Any) -> tuple[types.FunctionType, dict[str, Any]]:
    """Run ``source`` in a module-like namespace; return its function ``job`` and the namespace."""
    namespace.setdefault("__name__", "__main__")
    exec(textwrap.dedent(source), namespace)
    return namespace["job"], namespace


def cached(cache: ByValueCache, fn: types.FunctionType) -> bool:
    cache.remember(fn, cloudpickle.dumps(fn))
    return cache.get(fn) is not None


def test_a_plain_function_is_remembered_until_a_global_it_uses_is_rebound() -> None:
    cache = ByValueCache()
    job, namespace = define(
        """
        import math
        FACTOR = 2
        def job(x):
            return math.floor(x * FACTOR)
        """
    )
    data = cloudpickle.dumps(job)
    cache.remember(job, data)
    assert cache.get(job) is data
    assert cache.get(job) is data  # still valid: nothing changed
    namespace["FACTOR"] = 3
    assert cache.get(job) is None
    assert cached(cache, job)  # a fresh snapshot with the new value


def test_a_global_used_only_in_nested_code_counts_too() -> None:
    cache = ByValueCache()
    job, namespace = define(
        """
        STEP = 1
        def job(n):
            return sum(i * STEP for i in range(n))
        """
    )
    assert cached(cache, job)
    namespace["STEP"] = 5
    assert cache.get(job) is None


def test_a_new_global_shadowing_a_builtin_counts() -> None:
    cache = ByValueCache()
    job, namespace = define("def job(x):\n    return len(x)\n")
    assert cached(cache, job)
    namespace["len"] = lambda x: 0
    assert cache.get(job) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda job, ns: setattr(job, "__defaults__", (5,)),
        lambda job, ns: setattr(job, "__kwdefaults__", {"scale": 7}),
        lambda job, ns: setattr(job, "__code__", (lambda x=1, *, scale=2: x).__code__),
        lambda job, ns: setattr(job, "tag", "attribute"),
        lambda job, ns: setattr(job, "__qualname__", "renamed"),
        lambda job, ns: setattr(job, "__doc__", "documented"),
        lambda job, ns: job.__annotations__.__setitem__("x", int),
    ],
    ids=["defaults", "kwdefaults", "code", "attribute", "qualname", "doc", "annotations"],
)
def test_any_change_to_the_function_itself_counts(change: Any) -> None:
    cache = ByValueCache()
    job, namespace = define("def job(x=1, *, scale=2):\n    return x * scale\n")
    assert cached(cache, job)
    change(job, namespace)
    assert cache.get(job) is None


def test_an_import_anywhere_drops_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ByValueCache()
    job, _ = define("def job(x):\n    return x\n")
    assert cached(cache, job)
    monkeypatch.setitem(sys.modules, "jobpool_test_fresh_module", types.ModuleType("fresh"))
    assert cache.get(job) is None


@pytest.mark.parametrize(
    "source",
    [
        "SETTINGS = {'factor': 2}\ndef job(x):\n    return x * SETTINGS['factor']\n",
        "ITEMS = [1]\ndef job(x):\n    return x + len(ITEMS)\n",
        "def helper(x):\n    return x\ndef job(x):\n    return helper(x)\n",
        "class Box:\n    pass\ndef job(x):\n    return Box()\n",
        "def job(x, seen=[]):\n    return x\n",
        "PAIR = (1, [2])\ndef job(x):\n    return PAIR\n",
    ],
    ids=["global-dict", "global-list", "main-helper", "main-class", "list-default", "tuple-list"],
)
def test_what_may_change_in_place_is_never_cached(source: str) -> None:
    job, _ = define(source)
    assert not cached(ByValueCache(), job)


def test_closures_are_never_cached() -> None:
    settings = {"factor": 2}

    def job(x: int) -> int:
        return x * settings["factor"]

    assert not cached(ByValueCache(), job)  # type: ignore[arg-type]


def test_main_functions_are_shipped_fresh_after_a_change(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from jobpool import Pool

            FACTOR = 2

            def job(x):
                return x * FACTOR

            if __name__ == "__main__":
                with Pool(2, backend="process", start_method=sys.argv[1]) as pool:
                    print(sorted(f.result(60) for f in [pool.submit(job, 1) for _ in range(20)]))
                    FACTOR = 3  # rebinds the global the worker's copy was made with
                    print(sorted(f.result(60) for f in [pool.submit(job, 1) for _ in range(20)]))
                    print(pool.submit(lambda x: x + FACTOR, 1).result(60))
            """
        )
    )
    for method in ("forkserver", "fork"):
        out = subprocess.run(
            [sys.executable, str(script), method],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        lines = out.stdout.splitlines()
        assert lines == [str([2] * 20), str([3] * 20), "4"], (method, out.stderr)


def test_a_forked_worker_can_still_import_cloudpickle(tmp_path: Path) -> None:
    """Workers are forked under the lock that guards jobpool's cloudpickle import: a worker
    must not inherit it held. Here the worker is the first to need cloudpickle (its result
    cannot be pickled plainly), in a parent that never imported it."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import threading
            from jobpool import Pool

            if __name__ == "__main__":
                with Pool(1, backend="process", start_method="fork") as pool:
                    error = pool.submit(threading.Lock).exception(30)
                    print(type(error).__name__)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split() == ["SerializationError"], out.stderr
