"""The parts of :mod:`jobpool.multiprocessing`: result objects, the callback thread, ``imap``.

``jobpool.multiprocessing`` gives ``multiprocessing.Pool``'s API over :class:`jobpool.Pool`; this
package holds what that needs besides the pool class itself, one job per module:

- ``_results``: ``AsyncResult`` and ``MapResult`` (``get``, ``wait``, ``ready``, ``successful``);
- ``_callbacks``: the thread that runs ``callback`` / ``error_callback``, one at a time;
- ``_imap``: the lazy iterator of ``imap`` / ``imap_unordered``, with ``next(timeout)``;
- ``_seam``: submitting a map's chunks to a ``jobpool.Pool`` (the one internal seam).
"""
