"""The process backend: worker processes managed by jobpool itself, not ProcessPoolExecutor.

    caller thread                 dispatcher thread                  worker process
    -------------                 -----------------                  --------------
    submit(fn, *args)
      serialize (pickle, then
      cloudpickle) -> Job
      a worker idle and nothing
      queued? send it to that worker's pipe yourself ------------> run fn(*args)
      else JobQueue.put -- wake -> take a job for an idle worker
                                  send on that worker's pipe ------> run fn(*args)
                                  (short jobs: up to 4 more wait
                                  in a busy worker's pipe, _send_ahead)
                                  read the reply <------------------ send OK / RAISED
      Future resolved <---------- resolve the job's Future
    result() on a running job, nothing queued:
      read the reply yourself <----------------------------------- send OK / RAISED
                                  worker exited? fail only its job,
                                  start a replacement
                                  past its deadline? kill it with the
                                  programs it started (_stopping),
                                  then fail the job + replace it
                                  (jobs it had not started: requeue)

Serializing in the caller's thread makes a bad argument fail at ``submit`` with the part named,
before anything is queued. See ``_dispatcher`` for the loop and ``_in_worker`` for the child side.
"""
