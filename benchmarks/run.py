#!/usr/bin/env python
"""Run jobpool and its peers side by side; print markdown tables and write JSON.

    python benchmarks/run.py                  # full run (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick          # smoke run: every workload tiny, no assertions
    python benchmarks/run.py --only overhead,roundtrip --json /tmp/r.json

Every (workload, implementation) pair runs in a fresh child process in its own session, killed
with everything it started when it finishes or overruns its time limit. Peers that are not
installed are skipped with a note, so ``--quick`` works with jobpool and the stdlib alone.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks._child import MARKER  # noqa: E402
from benchmarks.common import Task  # noqa: E402
from benchmarks.impls import ENVIRONMENT, FACTORIES, missing_requirement  # noqa: E402
from benchmarks.jobs import cpu_loop  # noqa: E402
from benchmarks.workloads import ALL  # noqa: E402

PEER_PACKAGES = ("jobpool", "cloudpickle", "loky", "mpire", "pebble", "joblib", "psutil")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibrate_cpu(seconds: float) -> int:
    """Loop count for which ``cpu_loop`` takes about ``seconds`` here (best of 3)."""
    n = 200_000
    best = min(_time(cpu_loop, n) for _ in range(3))
    return max(1000, int(n * seconds / best))


def _time(fn: Any, arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def _kill_group(pid: int) -> None:
    if hasattr(os, "killpg"):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_task(task: Task) -> tuple[list[dict[str, Any]], Optional[str]]:
    """Run one task in a child process; returns its rows, or an error note."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("JOBPOOL_PORTABLE", None)  # each implementation as it says (ENVIRONMENT)
    env.update(ENVIRONMENT.get(task.impl, {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._child", json.dumps(asdict(task))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    note = None
    try:
        out, err = proc.communicate(timeout=task.timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        note = f"timed out after {task.timeout:g} s"
    except BaseException:
        _kill_group(proc.pid)
        proc.communicate()
        raise
    finally:
        _kill_group(proc.pid)  # anything the child left behind (workers, fork servers)
    for line in out.splitlines():
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER) :])
            if "error" in result:
                return [], f"error: {result['error']}"
            return list(result["rows"]), None
    tail = err.strip().splitlines()[-1:] if err else []
    return [], note or f"no result (exit code {proc.returncode}) {' '.join(tail)}"[:200]


def requirement(impl: str) -> Optional[str]:
    base = impl.replace(" map", "")
    return missing_requirement(base) if base in FACTORIES else None


def merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same impl (one per child process) become one, samples concatenated."""
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["impl"] not in merged:
            merged[r["impl"]] = r
            continue
        into = merged[r["impl"]]
        for name, values in r["metrics"].items():
            into["metrics"].setdefault(name, []).extend(values)
        into["info"] = r["info"] or into["info"]
    return list(merged.values())


def run_workload(name: str, quick: bool, cpu_n: int) -> dict[str, Any]:
    module = ALL[name]
    tasks = module.tasks(quick, cpu_n)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = [
        {"impl": impl, "reason": reason} for impl, reason in getattr(module, "SKIPPED", {}).items()
    ]
    rounds = 1 if quick else getattr(module, "ROUNDS", 1)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    ordered = [t for r in range(rounds) for t in (tasks if r % 2 == 0 else tasks[::-1])]
    for task in ordered:
        missing = requirement(task.impl)
        if missing:
            if not any(s["impl"] == task.impl for s in skipped):
                skipped.append({"impl": task.impl, "reason": f"{missing} is not installed"})
            continue
        start = time.perf_counter()
        task_rows, note = run_task(task)
        log(f"  {name:12} {task.impl:28} {time.perf_counter() - start:6.1f} s {note or ''}")
        if note:
            skipped.append({"impl": task.impl, "reason": note})
        rows.extend(task_rows)
    rows = merge(rows)
    params = tasks[0].params if tasks else {}
    derive = getattr(module, "derive", None)
    if derive is not None:
        derive(rows, params)
    report.summarise(module, rows)
    return {
        "title": module.TITLE,
        "params": params,
        "rounds": rounds,
        "load_avg": [load_before, os.getloadavg() if hasattr(os, "getloadavg") else None],
        "rows": rows,
        "skipped": skipped,
    }


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out: dict[str, Optional[str]] = {}
    for package in PEER_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def _git_commit() -> Optional[str]:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def _jobpool_source() -> dict[str, Optional[str]]:
    """Where jobpool was imported from and a digest of its sources (the tree may be dirty)."""
    spec = importlib.util.find_spec("jobpool")
    if spec is None or not spec.origin:
        return {"path": None, "sha1": None}
    package = Path(spec.origin).parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.read_bytes())
    return {"path": str(package), "sha1": digest.hexdigest()[:12]}


def _compile_jobpool() -> bool:
    """Byte-compile the jobpool being measured, as ``pip install`` does for every package.

    The peers come from site-packages with their ``.pyc`` files; jobpool, installed editable or
    run from a checkout, may have none, and with ``PYTHONDONTWRITEBYTECODE`` set each spawned
    worker would compile its modules from source on every start, which is not what an installed
    jobpool costs. Returns whether every module compiled.
    """
    spec = importlib.util.find_spec("jobpool")
    if spec is None or not spec.origin:
        return False
    return bool(compileall.compile_dir(Path(spec.origin).parent, quiet=1))


def _workload_names(given: list[str]) -> list[str]:
    """`--only overhead,startup` and `--only overhead startup` name the same workloads."""
    return [name for item in given for name in item.split(",") if name]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats")
    parser.add_argument(
        "--json",
        default=str(ROOT / "benchmarks" / "results.json"),
        help="where to write the results (default: benchmarks/results.json)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORKLOAD",
        help=f"run only these workloads, by space or comma: {', '.join(sorted(ALL))}",
    )
    args = parser.parse_args(argv)
    only = _workload_names(args.only) if args.only else None
    if only is not None:
        unknown = [name for name in only if name not in ALL]
        if unknown:
            known = ", ".join(sorted(ALL))
            parser.error(f"unknown workload {', '.join(unknown)}; choose from {known}")

    compiled = _compile_jobpool()
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu_n = calibrate_cpu(0.005 if args.quick else 0.1)
    names = only or list(ALL)
    log(f"jobpool benchmarks ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    workloads: dict[str, Any] = {}
    for name in names:
        workloads[name] = run_workload(name, args.quick, cpu_n)
    goals = report.goals(workloads)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": 2,
        "cpu_loop_n": cpu_n,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "jobpool_source": _jobpool_source(),
        "jobpool_bytecode_compiled": compiled,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "workloads": workloads, "goals": goals}, indent=1))
    log(f"wrote {path}")
    tables = [report.workload_table(ALL[name], workloads[name]) for name in names]
    print(
        f"### jobpool benchmarks - Python {meta['python']}, {meta['cpu_count']} CPUs, "
        f"{'quick' if args.quick else 'full'} run, {meta['wall_s']} s\n"
    )
    print("\n\n".join(tables))
    print()
    print(report.goals_table(goals))
    if args.quick:
        print("\n(--quick: tiny sizes; the numbers and verdicts above mean nothing.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
