"""What jobpool's fork server and its caller agree on (``_fork_server``, ``_fork_requests``).

A module of its own because the server's module preloads and freezes what it imports: the
caller must not import it.
"""

from __future__ import annotations

import struct

#: A request's header: the length of the pickle that follows.
HEADER = struct.Struct("Q")
#: The reply to a request: the new worker's pid, or minus an errno. Also what a worker's status
#: pipe receives when it exits: its exit code (``multiprocessing.forkserver.read_signed``).
REPLY = struct.Struct("q")
#: At most this many descriptors travel with one request: the worker's status pipe, its parent
#: sentinel, the caller's resource tracker, and those its arguments name.
MAX_FDS = 64
