"""The stdlib's ``concurrent`` package under jobpool's name: see :mod:`jobpool.concurrent.futures`.

The rule for both stdlib dialects is the same: put ``jobpool.`` in front of the stdlib's module
name (``multiprocessing.pool`` -> ``jobpool.multiprocessing.pool``, ``concurrent.futures`` ->
``jobpool.concurrent.futures``) and keep the rest of the import line.
"""
