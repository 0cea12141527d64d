"""The parts of :mod:`jobpool.multiprocessing`: the pools, their results, callbacks and ``imap``.

``jobpool.multiprocessing`` gives ``multiprocessing.Pool``'s API over :class:`jobpool.Pool`; this
package holds the pools and what they need, one job per module:

- ``_pool``: ``Pool`` and ``ThreadPool``, the stdlib's methods and lifecycle;
- ``_checks``: their argument checks, with the stdlib's exception types;
- ``_results``: ``AsyncResult`` and ``MapResult`` (``get``, ``wait``, ``ready``, ``successful``);
- ``_callbacks``: the thread that runs ``callback`` / ``error_callback``, one at a time;
- ``_imap``: the lazy iterator of ``imap`` / ``imap_unordered``, with ``next(timeout)``;
- ``_chunks``: submitting a map's chunks to a ``jobpool.Pool`` (the one internal seam).

``jobpool.multiprocessing`` itself only re-exports them (and the stdlib's other names).
"""
