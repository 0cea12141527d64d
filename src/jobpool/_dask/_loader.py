"""Find the Dask backend, or say exactly what to install."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backend import DaskBackend


def load_dask_backend() -> type[DaskBackend]:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs the 'distributed' package: pip install \"jobpool[dask]\" "
            '(from a checkout of jobpool: pip install ".[dask]")'
        ) from exc
    from ._backend import DaskBackend

    return DaskBackend
