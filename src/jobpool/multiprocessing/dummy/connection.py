"""``multiprocessing.dummy.connection``, the stdlib's, under jobpool's package name."""

from __future__ import annotations

from multiprocessing.dummy.connection import Client, Connection, Listener, Pipe

__all__ = ["Client", "Connection", "Listener", "Pipe"]
