"""A worker learns that its parent died from a pipe only the parent holds: no pidfd needed.

Each worker has a one-way pipe from its parent (the recall pipe, see ``_ahead``); the parent
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
"""

from __future__ import annotations

import weakref
from multiprocessing.connection import Connection

from .._platform import after_fork_in_child

# The write ends this process holds for its workers.
_HELD: weakref.WeakSet[Connection] = weakref.WeakSet()


def held_by_parent_only(end: Connection) -> None:
    """Close ``end`` in every child forked from this process from now on."""
    _HELD.add(end)


def _close_in_child() -> None:
    for end in list(_HELD):
        try:
            end.close()
        except OSError:
            pass
    _HELD.clear()


after_fork_in_child(_close_in_child)
