"""The Dask backend: the pool's jobs run as tasks on a Dask cluster (see ``_backend``)."""
