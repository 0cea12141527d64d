"""What the upper parts of the Dask dispatcher stand on: the parts below them, made once.

:class:`DaskWorkers`, :class:`Sender` and :class:`Results` each call the same lower parts: the
Dask client (through which they ask the cluster), the inbox (where its answers come back), the
books (:class:`Tasks`) and the line. The dispatcher makes those once and hands them over as one
:class:`Below`; each upper part is a :class:`Part` that keeps them. Nothing below calls a part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._inbox import Inbox
from ._line import DaskLine
from ._tasks import Tasks


@dataclass(frozen=True)
class Below:
    client: Any  # the distributed.Client
    inbox: Inbox
    tasks: Tasks
    line: DaskLine


class Part:
    """An upper part of the dispatcher: it may call what is below it, never what is above."""

    def __init__(self, below: Below) -> None:
        self._client = below.client
        self._inbox = below.inbox
        self._tasks = below.tasks
        self._line = below.line
