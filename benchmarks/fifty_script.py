"""Fifty workers brought up at once: ``Pool(processes=50)``, 50 jobs of ``time.sleep(0.5)``.

``python benchmarks/fifty_script.py multiprocessing`` or ``... jobpool``: only the import is
chosen by argv (a second argument names a start method for the standard library). Every job
sleeps, so they all run at once only once all 50 workers are up: the seconds from making the
pool to the last result, less the half second a job sleeps, are what bringing up fifty
workers cost. It prints them as JSON on its last line (``benchmarks/workloads/fifty.py``).
"""

import json
import sys
import time

if sys.argv[1] == "jobpool":
    from jobpool.multiprocessing import Pool
else:
    from multiprocessing import Pool

WORKERS = 50
NAP = 0.5


def nap(i):
    time.sleep(NAP)
    return i


if __name__ == "__main__":
    if len(sys.argv) > 2:
        import multiprocessing

        multiprocessing.set_start_method(sys.argv[2])
    t = time.perf_counter()
    pool = Pool(processes=WORKERS)
    results = [pool.apply_async(nap, (i,)) for i in range(WORKERS)]
    assert [r.get() for r in results] == list(range(WORKERS))
    up = time.perf_counter() - t - NAP
    pool.close()
    pool.join()
    print(json.dumps({"bring_up": up, "total": time.perf_counter() - t}))
