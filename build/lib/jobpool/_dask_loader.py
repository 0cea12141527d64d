"""Find the Dask backend, or say exactly what to install."""

from __future__ import annotations

from typing import Any


def load_dask_backend() -> Any:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs the 'distributed' package: pip install \"jobpool[dask]\""
        ) from exc
    from ._dask import DaskBackend

    return DaskBackend
