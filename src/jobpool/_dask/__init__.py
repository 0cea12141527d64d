"""The Dask backend: the pool's jobs run as tasks on a Dask cluster (``distributed``).

    caller thread               dispatcher thread                  Dask worker (one of several)
    -------------               -----------------                  ----------------------------
    submit(fn, *args)
      serialize (pickle, then
      cloudpickle) -> Job
      JobQueue.put --- wake ---> for a worker with room (its free
                                 slots, plus a few to wait there
                                 when its jobs are short):
                                   client.submit, pinned there ---> run_on_worker(bytes)
                                                                      claim it, unpickle, run
                                 watch it <- result fetched <------- (tag, result or exception)
      Future resolved <--------- resolve the job's Future once;
                                 the next task waiting on that
                                 worker is running now

The pool keeps its own queue: at most ``workers`` of its jobs run on the cluster at once, the
slots shared out over the cluster's workers (see ``_slots``), and the rest wait in the pool's
bounded queue, so backpressure, ``submit_nowait`` and the lazy ``map`` behave as on the other
backends. A worker whose jobs are short also holds a few tasks beyond its slots, which
start there the moment a running one ends: no worker waits for a scheduler round trip between two
jobs. Like the process backend's jobs sent ahead, those are marked running when sent.

Jobs travel as bytes made by :mod:`jobpool._serialization` (so a bad argument fails at
``submit`` with the part named, and lambdas, closures and bound methods work); a worker runs them
and sends back bytes too, so Dask itself only ever moves bytes. A job's exception therefore never
becomes a Dask task error: Dask does not retry it, and it comes back with its own type and the
worker-side traceback. What *is* a task error is a worker that died while running it
(``KilledWorker``), reported as :class:`WorkerCrashedError`.

Without ``address=`` or ``client=``, the backend starts a ``LocalCluster`` of worker processes on
the loopback interface and closes it with the pool (``_cluster``). With ``address=`` it connects
a client of its own (closed with the pool, the cluster left running); with ``client=`` it uses
that client and leaves it open.

The parts: ``_backend`` (``DaskBackend``, the face the pool sees) makes the dispatcher thread
(``_dispatcher``, whose docstring draws its parts, from its loop down); what runs inside the Dask
workers is ``_in_worker``, which the client side imports and which imports nothing of it; the
pool's own cluster is ``_cluster``.
"""
