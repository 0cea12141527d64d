"""What jobpool's fork server and its caller agree on (``_fork_server``, ``_fork_requests``).

A module of its own because the server's module preloads and freezes what it imports: the
caller must not import it.
"""

from __future__ import annotations

import socket
import struct

#: A request's header: the length of the pickle that follows.
HEADER = struct.Struct("Q")
#: The reply to a request: the new worker's pid, or minus an errno. Also what a worker's status
#: pipe receives when it exits: its exit code (``multiprocessing.forkserver.read_signed``).
REPLY = struct.Struct("q")
#: At most this many descriptors travel with one request: the worker's status pipe, its parent
#: sentinel, the caller's resource tracker, and those its arguments name.
MAX_FDS = 64


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``; raises ``ConnectionResetError`` if the other side ends
    first (the server gone, or a request broken off)."""
    parts = []
    while size > 0:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise ConnectionResetError("the other end of jobpool's fork server socket closed")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
