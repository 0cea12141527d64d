"""Death notices without pidfds: a pipe whose write end only one process holds.

**The parent's death.** A worker learns that its parent died from a pipe only the parent holds.

Each worker has a one-way pipe from its parent (the recall pipe, see ``_send_ahead``); the parent
holds the write end, the worker's watch thread sleeps on the read end. The kernel closes the
write end when the parent's process ends however it ends (``SIGKILL`` included), and the read
end then reports end of file: the worker's watch thread wakes at once. The parent itself closes
that end only after the worker has exited (``WorkerHandle.close_fds``), so an end of file seen
by a living worker means the parent is gone.

That holds only while the parent alone holds the write end. A child forked from the parent
would inherit a copy and keep the pipe open after the parent's death: a worker started later
with the ``fork`` start method, the user's own ``os.fork()`` or ``multiprocessing`` process, a
``subprocess`` between its fork and its exec. This is the weakness of multiprocessing's parent
sentinel, and why the watch thread used to poll ``os.getppid()`` where there was no pidfd.
Here each write end is closed in every child ``os.fork`` makes (``os.register_at_fork``), before
the child runs anything else; ``subprocess`` closes it at exec (it is not inheritable). Only a
fork made in C, behind Python's back, and not followed by an exec, keeps a copy: the watch
thread's ``os.getppid()`` comparison, once a second where there is no pidfd, remains for that.

**A worker's exit.** The other way round, where there are no pidfds, the dispatcher learns that a
worker exited from a pipe whose write end only that worker holds (``worker_exit_pipe``), not
from multiprocessing's sentinel: under the ``forkserver`` start method that sentinel is a pipe
from the fork server, which reports every worker as exited (code 255) when the fork server
itself dies (killed; the standard library's also died when it had no descriptor free for a
request); and under ``fork`` a process forked by another thread at the wrong moment can keep it
open. The
worker closes its write end in every child it forks, as the parent does with the other pipe.
"""

from __future__ import annotations

import weakref
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Optional

from .. import _platform
from .._platform import after_fork_in_child

# The write ends this process alone holds: its workers' recall pipes (in the parent), its own
# exit pipe (in a worker).
_HELD: weakref.WeakSet[Connection] = weakref.WeakSet()


def held_here_only(end: Connection) -> None:
    """Close ``end`` in every child forked from this process from now on."""
    _HELD.add(end)


def worker_exit_pipe(context: BaseContext) -> tuple[Optional[Connection], Optional[Connection]]:
    """The parent's read end and the worker's write end of a new worker's exit pipe, or
    ``(None, None)`` where a pidfd of the worker tells its exit (``_platform.PIDFD``)."""
    if _platform.PIDFD:
        return None, None
    reader, writer = context.Pipe(duplex=False)
    return reader, writer


def _close_in_child() -> None:
    for end in list(_HELD):
        try:
            end.close()
        except OSError:
            pass
    _HELD.clear()


after_fork_in_child(_close_in_child)
