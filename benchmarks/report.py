"""Turn the collected rows into medians, ratios, goal verdicts and markdown tables."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Optional

from .common import median, spread
from .impls import STDLIB_REFERENCE

INFO_COLUMNS = {
    "lazy": ["stall", "lazy"],
    "big_closure": ["error"],
    "big_data": ["arguments_mb_s / floor", "results_mb_s / floor"],
    "crash": ["crashed job", "other jobs", "same pool usable after", "graceful shutdown"],
    "mp_pool": ["speed x stdlib", "at least as fast"],
    "recycling": ["hung"],
    "chain": ["speed x caller waits"],
}


def summarise(module: ModuleType, rows: list[dict[str, Any]]) -> None:
    """Add ``summary`` (median/spread/n per metric) and the primary ratio to every row."""
    references = getattr(module, "REFERENCE", STDLIB_REFERENCE)
    for r in rows:
        r["summary"] = {
            name: {"median": median(values), "spread": spread(values), "n": len(values)}
            for name, values in r["metrics"].items()
        }
    by_impl = {r["impl"]: r for r in rows}
    for r in rows:
        ref_name = r["ref"] if "ref" in r else references.get(r["flavour"])
        r["ref"] = ref_name
        r["speed_x_ref"] = None
        ref = by_impl.get(ref_name) if ref_name else None
        mine = _median(r, module.PRIMARY)
        theirs = _median(ref, module.PRIMARY) if ref else None
        if mine and theirs:
            r["speed_x_ref"] = mine / theirs if module.HIGHER_IS_BETTER else theirs / mine


def _median(r: Optional[dict[str, Any]], metric: str) -> Optional[float]:
    if r is None:
        return None
    value = r.get("summary", {}).get(metric, {}).get("median")
    return float(value) if value is not None else None


def _cell(value: Any) -> str:
    """Free text (error messages) goes in a code span, so markdown renders ``<locals>`` as is."""
    text = str(value)
    return f"`{text}`" if "<" in text or "*" in text else text


def _table_text(cell: str) -> str:
    """A cell as markdown that renders as printed: no column break, and no ``[a] [b]`` pair
    (such as ``jobpool[thread] [cs=1000]``) that a docs build would read as a reference link."""
    return cell.replace("|", "/").replace("] [", "] \\[")


def _fmt(value: Optional[float], fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def _load(pair: Any) -> str:
    if not pair or None in pair:
        return "-"
    return " / ".join(f"{p[0]:.2f}" for p in pair)


def workload_table(module: ModuleType, data: dict[str, Any]) -> str:
    columns = module.COLUMNS
    info = INFO_COLUMNS.get(module.NAME, [])
    header = ["impl", "flavour", "API", *(h for _, h, _ in columns), "spread", "speed x ref", "ref"]
    header += info
    lines = [
        f"#### {module.NAME} - {data['title']}",
        "",
        f"params: `{data['params']}` x {data.get('rounds', 1)} rounds; "
        f"load average before/after: {_load(data.get('load_avg'))}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in data["rows"]:
        cells = [r["impl"], r["flavour"], r["api"]]
        cells += [_fmt(_median(r, metric), fmt) for metric, _, fmt in columns]
        sp = r["summary"].get(module.PRIMARY, {}).get("spread")
        cells.append(_fmt(sp * 100 if sp is not None else None, "{:.0f}%"))
        cells.append(_fmt(r.get("speed_x_ref"), "{:.2f}"))
        cells.append(r.get("ref") or "-")
        cells += [_cell(r["info"].get(key, "")) for key in info]
        lines.append("| " + " | ".join(_table_text(c) for c in cells) + " |")
    for skip in data["skipped"]:
        lines.append(f"- skipped {skip['impl']}: {skip['reason']}")
    lines.append("")
    lines.append(
        "'speed x ref' > 1: faster than the reference in the same run; 'spread' = (max - min) / "
        "median of the primary metric over the repetitions."
    )
    return "\n".join(lines)


def _get(workloads: dict[str, Any], name: str, impl: str, metric: str) -> Optional[float]:
    for r in workloads.get(name, {}).get("rows", []):
        if r["impl"] == impl:
            return _median(r, metric)
    return None


def _goal(goal: str, target: str, measured: str, met: Optional[bool]) -> dict[str, Any]:
    return {"goal": goal, "target": target, "measured": measured, "met": met}


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    jt, tpe = (
        _get(w, "overhead", "jobpool[thread]", "us_per_job"),
        _get(w, "overhead", "cf.ThreadPoolExecutor", "us_per_job"),
    )
    r = _ratio(jt, tpe)
    out.append(
        _goal(
            "thread per-job overhead",
            "<= 1.15 x cf.ThreadPoolExecutor",
            f"{_fmt(jt, '{:.1f}')} vs {_fmt(tpe, '{:.1f}')} us/job = {_fmt(r, '{:.2f}')}x",
            None if r is None else r <= 1.15,
        )
    )
    jp, mpp = (
        _get(w, "overhead", "jobpool[process]", "us_per_job"),
        _get(w, "overhead", "mp.Pool", "us_per_job"),
    )
    r = _ratio(jp, mpp)
    out.append(
        _goal(
            "process per-job overhead",
            "<= 0.6 x mp.Pool.apply_async",
            f"{_fmt(jp, '{:.1f}')} vs {_fmt(mpp, '{:.1f}')} us/job = {_fmt(r, '{:.2f}')}x",
            None if r is None else r <= 0.6,
        )
    )
    rt = _get(w, "roundtrip", "jobpool[process]", "us_per_job")
    floor = _get(w, "roundtrip", "floor: mp.Pipe + pickle", "us_per_job")
    # The ratio to the floor measured batch for batch in the same process (see roundtrip.py);
    # the ratio of the two rows' medians, taken minutes apart, only when that is missing.
    paired = _get(w, "roundtrip", "jobpool[process]", "x_floor")
    r = paired if paired is not None else _ratio(rt, floor)
    out.append(
        _goal(
            "process round trip",
            "<= 1.5 x bare pickled Pipe round trip (paired in one process)",
            f"{_fmt(rt, '{:.1f}')} us, floor {_fmt(floor, '{:.1f}')} us; paired "
            f"{_fmt(r, '{:.2f}')}x",
            None if r is None else r <= 1.5,
        )
    )
    jm = _get(w, "map_tiny", "jobpool[process] [cs=default]", "items_per_s")
    mm = _get(w, "map_tiny", "mp.Pool", "items_per_s")  # its best chunk size
    growth = _get(w, "lazy", "jobpool[process]", "rss_growth_mb")
    lazy_row = next(
        (x for x in w.get("lazy", {}).get("rows", []) if x["impl"] == "jobpool[process]"), None
    )
    is_lazy = bool(lazy_row and lazy_row["info"].get("lazy"))
    r = _ratio(jm, mm)
    met = None if r is None or growth is None else (r >= 1.0 and growth < 10 and is_lazy)
    out.append(
        _goal(
            "map default throughput, lazily",
            ">= mp.Pool.map at its best chunksize; parent RSS growth < 10 MB over 2M items; "
            "bounded read-ahead",
            f"{_fmt(jm, '{:,.0f}')} vs {_fmt(mm, '{:,.0f}')} items/s = {_fmt(r, '{:.2f}')}x; "
            f"RSS growth {_fmt(growth, '{:.1f}')} MB; lazy={is_lazy}",
            met,
        )
    )
    bw = _get(w, "big_closure", "jobpool[process]", "wall_s")
    bs = _get(w, "big_closure", "jobpool[process]", "shipments")
    bm = _get(w, "big_closure", "jobpool[process] map", "wall_s")
    out.append(
        _goal(
            "function shipped once per worker",
            "big closure (submit) well under 1 s, shipments <= workers",
            f"submit: {_fmt(bw, '{:.3f}')} s, {_fmt(bs, '{:.0f}')} shipments; "
            f"map: {_fmt(bm, '{:.3f}')} s",
            None if bw is None or bs is None else (bw < 1.0 and bs <= 2),
        )
    )
    js = _get(w, "cpu", "jobpool[process]", "speedup")
    ms = _get(w, "cpu", "mp.Pool", "speedup")
    out.append(
        _goal(
            "CPU speedup",
            ">= mp.Pool",
            f"{_fmt(js, '{:.2f}')} vs {_fmt(ms, '{:.2f}')} (serial = 1)",
            None if js is None or ms is None else js >= ms,
        )
    )
    xi = _get(w, "io", "jobpool[thread]", "x_ideal")
    tx = _get(w, "io", "cf.ThreadPoolExecutor", "x_ideal")
    out.append(
        _goal(
            "I/O sleeps on threads",
            "<= 1.15 x ideal",
            f"{_fmt(xi, '{:.3f}')} x ideal (cf.ThreadPoolExecutor {_fmt(tx, '{:.3f}')})",
            None if xi is None else xi <= 1.15,
        )
    )
    ratios = {  # medians of paired ratios (see benchmarks/workloads/per_worker.py)
        api: _get(w, "per_worker", f"jobpool[process] per_worker {api}", "x_function")
        for api in ("submit", "map")
    }
    out.append(
        _goal(
            "per_worker method per-job cost",
            "<= 1.10 x a module-level function (process; submit and map)",
            ", ".join(f"{api} {_fmt(r, '{:.3f}')}x" for api, r in ratios.items()),
            None if None in ratios.values() else all(r <= 1.10 for r in ratios.values() if r),
        )
    )
    retried = {  # medians of paired ratios (see benchmarks/workloads/retries.py)
        f"{flavour} {api}": _get(w, "retries", f"jobpool[{flavour}] retries {api}", "x_plain")
        for flavour in ("thread", "process")
        for api in ("submit", "map")
    }
    out.append(
        _goal(
            "per-job cost with retries set",
            "<= 1.05 x the same pool without (thread, process; submit and map)",
            ", ".join(f"{key} {_fmt(r, '{:.3f}')}x" for key, r in retried.items()),
            None if None in retried.values() else all(r <= 1.05 for r in retried.values() if r),
        )
    )
    for method in ("forkserver", "spawn", "fork"):
        a = _get(w, "startup", f"jobpool[process] @{method}", "first_result_ms")
        b = _get(w, "startup", f"cf.ProcessPoolExecutor @{method}", "first_result_ms")
        r = _ratio(a, b)
        out.append(
            _goal(
                f"startup ({method})",
                "<= 1.2 x ProcessPoolExecutor, same start method",
                f"{_fmt(a, '{:.1f}')} vs {_fmt(b, '{:.1f}')} ms = {_fmt(r, '{:.2f}')}x",
                None if r is None else r <= 1.2,
            )
        )
    out += _big_data_goals(w)
    out += _mp_pool_goals(w)
    out += _tutorial_goals(w)
    out += _fifty_goals(w)
    out += _recycling_goals(w)
    return out


def _recycling_goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    from .workloads import recycling

    return recycling.goals(w)


def _fifty_goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    from .workloads import fifty

    return fifty.goals(w)


def _tutorial_goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    from .workloads import tutorial

    return tutorial.goals(w)


def _mp_pool_goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    """jobpool.multiprocessing against the stdlib pool it replaces, measure by measure."""
    from .workloads.mp_pool import PAIRS, speed_ratios

    rows = {r["impl"]: r for r in w.get("mp_pool", {}).get("rows", [])}
    out = []
    for mine, theirs in PAIRS.items():
        ratios = speed_ratios(rows[mine], rows[theirs]) if mine in rows and theirs in rows else {}
        out.append(
            _goal(
                f"{mine} vs {theirs}",
                ">= 1x on apply_async overhead, map, imap and imap(chunksize=1000)",
                ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items()) or "-",
                None if not ratios else all(r >= 1.0 for r in ratios.values()),
            )
        )
    return out


def _big_data_goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16: 2 GB/s each way, 3x mp.Pool and above joblib on arguments, parent RSS."""
    case = "32 MB x 8"
    mine = {m: _get(w, "big_data", f"jobpool[process] | {case}", m) for m in _BIG_METRICS}
    mp = _get(w, "big_data", f"mp.Pool | {case}", "arguments_mb_s")
    joblib = _get(w, "big_data", f"joblib(loky) | {case}", "arguments_mb_s")
    args, results = mine["arguments_mb_s"], mine["results_mb_s"]
    r = _ratio(args, mp)
    data_mb = 32 * 8
    peak = mine["parent_peak_arguments_mb"]
    return [
        _goal(
            "large arrays, each way",
            ">= 2,000 MB/s arguments and results (32 MB x 8)",
            f"{_fmt(args, '{:,.0f}')} / {_fmt(results, '{:,.0f}')} MB/s",
            None if args is None or results is None else min(args, results) >= 2000,
        ),
        _goal(
            "large arrays as arguments vs peers",
            ">= 3 x mp.Pool and > joblib auto-memmap",
            f"{_fmt(r, '{:.2f}')}x mp.Pool; joblib {_fmt(joblib, '{:,.0f}')} MB/s",
            None if r is None or joblib is None or args is None else r >= 3 and args > joblib,
        ),
        _portable_goal(w, case),
        _goal(
            "parent memory with large arguments",
            f"peak RSS <= data ({data_mb} MB) + one copy + interpreter (~100 MB)",
            f"{_fmt(peak, '{:,.0f}')} MB",
            None if peak is None else peak <= 2 * data_mb + 100,
        ),
    ]


def _portable_goal(w: dict[str, Any], case: str) -> dict[str, Any]:
    """Issue 29: without memfd (as on macOS), still 3x mp.Pool each way."""
    portable = "jobpool[process, portable]"
    ratios = [
        _ratio(
            _get(w, "big_data", f"{portable} | {case}", metric),
            _get(w, "big_data", f"mp.Pool | {case}", metric),
        )
        for metric in ("arguments_mb_s", "results_mb_s")
    ]
    measured = " / ".join(f"{_fmt(r, '{:.2f}')}x" for r in ratios)
    return _goal(
        "large arrays without memfd (JOBPOOL_PORTABLE=1), each way",
        ">= 3 x mp.Pool, arguments / results (32 MB x 8)",
        measured,
        None if None in ratios else all(r is not None and r >= 3 for r in ratios),
    )


_BIG_METRICS = ("arguments_mb_s", "results_mb_s", "parent_peak_arguments_mb")


def goals_table(rows: list[dict[str, Any]]) -> str:
    lines = ["#### goals", "", "| goal | target | measured | met |", "|---|---|---|---|"]
    for g in rows:
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {met} |")
    return "\n".join(lines)
