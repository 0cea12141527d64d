"""The tutorial's timing script, as a user runs it: only its first import is chosen by argv.

``python benchmarks/tutorial_script.py multiprocessing`` or ``... jobpool``: thread and process
pools of 50, ``apply_async`` then ``get()``, 300 small-file jobs and 2,000 ``i * i`` jobs, each
part timed from making the pool to ``join()``. A second argument names a start method for the
standard library (``set_start_method``); jobpool keeps its own default either way. It prints the
seconds of each part as JSON on its last line (``benchmarks/workloads/tutorial.py`` runs it).
"""

import json
import os
import sys
import tempfile
import time

if sys.argv[1] == "jobpool":
    from jobpool.multiprocessing import Pool, ThreadPool
else:
    from multiprocessing import Pool
    from multiprocessing.pool import ThreadPool

D = tempfile.mkdtemp()


def do_file(i):
    p = os.path.join(D, f"f{i}")
    with open(p, "w") as f:
        f.write("x" * 1000)
    with open(p) as f:
        return len(f.read())


def square(i):
    return i * i


if __name__ == "__main__":
    if len(sys.argv) > 2:
        import multiprocessing

        multiprocessing.set_start_method(sys.argv[2])
    out = {}
    for kind, cls in (("thread", ThreadPool), ("process", Pool)):
        for part, fn, n in (("file", do_file, 300), ("squares", square, 2000)):
            t = time.perf_counter()
            pool = cls(processes=50)
            rs = [pool.apply_async(fn, (a,)) for a in range(n)]
            [r.get() for r in rs]
            pool.close()
            pool.join()
            out[f"{kind} {part}"] = time.perf_counter() - t
    out["total"] = sum(out.values())
    print(json.dumps(out))
