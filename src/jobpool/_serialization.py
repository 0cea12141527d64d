"""Turn jobs, results and exceptions into bytes, or say exactly why one cannot be.

:func:`dumps` pickles with stdlib pickle first and cloudpickle when it refuses (``_picklers``);
when both refuse, it raises :class:`SerializationError` naming the first part of the object
that cannot be serialized (``args[0].conn``), what it holds and the fix (``_pickling_advice``).
"""

from __future__ import annotations

import pickle
from typing import Optional

from ._picklers import cloud_dumps, plain_pickle
from ._pickling_advice import explain_failure

# What the errors of a job's result call it (and ``_remote``, in the caller, the same).
RESULT = "the job's result"
ITEM_RESULT = "the item's result"

loads = pickle.loads


def dumps(obj: object, what: str = "object", *, to_worker: bool = True) -> bytes:
    """Serialize ``obj``; ``what`` names it in the error (``"job"``, ``"result"``...).

    ``to_worker``: it travels to a worker, where functions of the script share one namespace
    (see ``_main_globals``); results and exceptions travel back with ``to_worker=False``.
    """
    try:
        data = plain_pickle(obj)  # pickle_plainly's, inline: every job's arguments come here
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc
    if data is not None:
        return data
    try:
        return cloud_dumps(obj, to_worker)
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc


def pickle_plainly(obj: object, what: str) -> Optional[bytes]:
    """The stdlib pickle of ``obj``, or None when it needs cloudpickle (``_picklers``).

    Any error but pickle's refusal (an object whose ``__reduce__`` raises) is explained at once
    (``SerializationError``).
    """
    try:
        return plain_pickle(obj)
    except Exception as exc:
        raise explain_failure(obj, what, exc) from exc
