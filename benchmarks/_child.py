"""Child side: ``python -m benchmarks._child '<task json>'`` runs one task, prints its rows."""

from __future__ import annotations

import json
import os
import sys
import traceback

MARKER = "@@BENCH-RESULT@@ "


def main() -> None:
    from .workloads import ALL

    spec = json.loads(sys.argv[1])
    exit_now = False
    try:
        rows = ALL[spec["workload"]].run(spec["impl"], spec["params"])
        result: dict[str, object] = {"rows": rows}
        exit_now = any(r.get("info", {}).get("exit_now") for r in rows)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    if exit_now:  # a pool hung on shutdown: leave without joining it (the parent cleans up)
        os._exit(0)


if __name__ == "__main__":
    main()
