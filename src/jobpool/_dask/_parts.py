"""What the upper parts of the Dask dispatcher stand on: the parts below them, made once.

:class:`DaskWorkers`, :class:`Sender` and :class:`Results` each call the same lower parts: the
Dask client (through which they ask the cluster), the inbox (where its answers come back), the
pool's tasks (:class:`ClusterTasks`) and the line. The dispatcher makes those once and hands
them over as one :class:`LowerParts`; each upper part is an :class:`UpperPart` that keeps them.
Nothing below calls an upper part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._inbox import Inbox
from ._line import DaskLine
from ._tasks import ClusterTasks


@dataclass(frozen=True)
class LowerParts:
    client: Any  # the distributed.Client
    inbox: Inbox
    tasks: ClusterTasks
    line: DaskLine


class UpperPart:
    """An upper part of the dispatcher: it may call what is below it, never what is above."""

    def __init__(self, lower: LowerParts) -> None:
        self._client = lower.client
        self._inbox = lower.inbox
        self._tasks = lower.tasks
        self._line = lower.line
