"""What jobpool's fork server imports once (its preload), so that each worker it forks starts warm.

The worker's side of jobpool; the stdlib module that unpickles the pipes a worker is started
with (each worker imported it for itself: 0.8 ms of its start); and cloudpickle, which loads
every function sent by value (a script's own functions, lambdas, closures): a worker that
imported cloudpickle itself at its first such job would spend more CPU on that import than on
its whole start (about 16 ms a worker; 50 workers on 2 cores: most of a second).

The garbage collector is kept out of it: its collections during these imports find nothing to
free (a module's objects live as long as the process) and only lengthen the server's start,
which the first worker of every pool waits for. What the imports made is then frozen
(``gc.freeze``, as the Python documentation advises before forking many children): a worker's
collections never walk the objects every worker shares with the server, nor copy the memory
pages that hold them.

It also takes the server's ``__main__`` namespace as received, once for every worker
(``_main_globals.adopt_for_forks``): it is the namespace each of them starts with.

Only the fork server imports this module (``_context.WORKER_PRELOAD``).
"""

from __future__ import annotations

import gc

_collecting = gc.isenabled()
gc.disable()
try:
    try:  # every worker's arguments name it: its pipes travel as ``popen_forkserver._DupFd``
        import multiprocessing.popen_forkserver  # noqa: F401
    except ImportError:  # no fork server on this system (nor anything importing this module)
        pass

    import cloudpickle  # noqa: F401

    from .. import _main_globals
    from . import _in_worker  # noqa: F401

    # The workers' namespace is this server's __main__, which nothing changes after this.
    _main_globals.adopt_for_forks()
finally:
    gc.freeze()
    if _collecting:
        gc.enable()
