"""The Dask backend's own ``LocalCluster``, whose worker processes never import your ``__main__``.

Why: ``distributed``'s nannies start their worker processes with multiprocessing's spawn, and a
spawned process first re-imports the parent's ``__main__`` (``multiprocessing.spawn``'s
``init_main_from_path`` / ``init_main_from_name``). For a script without the
``if __name__ == "__main__":`` guard that re-runs its top level in every worker (which creates
another pool there); for a script read from standard input the worker looks for a file called
``<stdin>`` and dies ("Nanny failed to start"). jobpool ships functions, classes and values from
``__main__`` by value (cloudpickle), so its workers never need the script.

How, without changing anything for the rest of the process (loky does the same for its own
processes with the ``init_main_module`` switch of its ``backend/spawn.py``):

- The pool's cluster uses :class:`OwnNanny`, a ``Nanny`` that marks the coroutine starting its
  worker process (at start, and at every restart after a crash) with a context variable.
- ``distributed``'s process wrapper asks ``get_mp_context()`` for the context to start that
  process with; jobpool wraps that function so that, under the mark only, it answers with
  :data:`SPAWN_WITHOUT_MAIN`: a spawn context whose processes leave the main-module entries out
  of the data a spawned child prepares itself from. Every other caller gets distributed's answer.
- Leaving them out is done by the same wrapper of ``multiprocessing.spawn.get_preparation_data``
  that starts the process backend's workers without ``__main__`` (``_process/_start``): it
  changes the data only while one of those processes is being started, in that thread.

Other multiprocessing users in the process (your own pools, other Dask clusters) are not
affected. A worker process of the pool's cluster uses spawn even where Dask's configuration asks
for forkserver (whose server process imports ``__main__``); ``fork`` is kept, since a forked
process does not import anything. If the hooks cannot be installed (a ``distributed`` without
``get_mp_context`` in its process module), the cluster starts as Dask starts it, and a
``__main__`` that a worker could not import at all (a script read from standard input) is
refused at once with what to do instead.

Who may talk to the cluster: only this process. Its scheduler, nannies and workers listen on
loopback, but any local user can reach loopback, and a Dask scheduler runs whatever its clients
send, as the user who started it (jobpool's jobs are pickles too). So every listener of the
cluster speaks TLS and requires a client certificate: :func:`temporary_security` makes a key and
a self-signed certificate for this cluster alone, in memory, and that certificate is the only
one the cluster trusts. The pool's client, the nannies and the workers (which get the key from
their nanny when they are spawned) hold it; a client or a worker without it is refused during
the TLS handshake, before it can send a message. The key is an elliptic-curve one (P-256):
made in well under a millisecond, where distributed's ``Security.temporary()`` makes an RSA key
(tens of milliseconds, sometimes a tenth of a second), and cheaper at each TLS handshake. The
scheduler's and the workers' HTTP servers, which Dask starts even without a dashboard and which
do not check certificates, serve no routes at all (no health, metrics or task pages).
"""

from __future__ import annotations

import contextvars
import datetime
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import sys
import threading
from typing import Any, Callable, Optional

import dask
import distributed
import distributed.process

from .._process._start import skip_main_in_workers, starting_without_main
from ._client import new_client

_process_module: Any = distributed.process  # untyped: its functions have no annotations

# The cluster a pool starts for itself fails a job at the first worker death instead of
# retrying it on other workers (Dask's default is 3 retries, each killing a worker).
OWN_CLUSTER_ALLOWED_FAILURES = 0

_starting_own_worker: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jobpool_starting_own_dask_worker", default=False
)
_install_lock = threading.Lock()
_installed: Optional[bool] = None  # None: not tried yet; False: distributed offers no hook


class _SpawnProcessWithoutMain(multiprocessing.context.SpawnProcess):
    """A spawned process that does not import the parent's ``__main__`` first."""

    def start(self) -> None:
        with starting_without_main():
            super().start()


class SpawnContextWithoutMain(multiprocessing.context.SpawnContext):
    Process = _SpawnProcessWithoutMain


SPAWN_WITHOUT_MAIN = SpawnContextWithoutMain()


class OwnNanny(distributed.Nanny):
    """A Nanny whose worker processes (first and restarted ones) skip ``__main__``."""

    async def instantiate(self) -> Any:
        mark = _starting_own_worker.set(True)
        try:
            return await super().instantiate()
        finally:
            _starting_own_worker.reset(mark)


def _wrap_get_mp_context(original: Callable[[], Any]) -> Callable[[], Any]:
    def get_mp_context() -> Any:
        context = original()
        if _starting_own_worker.get() and context.get_start_method() != "fork":
            return SPAWN_WITHOUT_MAIN
        return context

    get_mp_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_mp_context


def install_hooks() -> bool:
    """Install both wrappers once; False if this ``distributed`` has no place for them."""
    global _installed
    with _install_lock:
        if _installed is None:
            original: Any = getattr(_process_module, "get_mp_context", None)
            _installed = callable(original)
            if _installed:
                _process_module.get_mp_context = _wrap_get_mp_context(original)
                skip_main_in_workers()
        return _installed


def refuse_unimportable_main() -> None:
    """Say at once why a worker could not start, instead of Dask's "Nanny failed to start"."""
    main_path = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_path is None or getattr(sys.modules["__main__"], "__spec__", None) is not None:
        return
    original_dir = getattr(multiprocessing.process, "ORIGINAL_DIR", None) or ""
    if not os.path.exists(os.path.join(original_dir, main_path)):
        raise RuntimeError(
            f"backend='dask' cannot start its own LocalCluster from this program: Dask starts "
            f"its worker processes with spawn, and each would first import your main module "
            f"from {main_path!r}, which is not a file (a script read from standard input?). "
            "Save the script to a file, or start a cluster yourself and pass address= or client="
        )


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors have no annotations."""
    return distributed


# The certificate never expires (RFC 5280's value for "no well-defined expiration date"): it
# lives in memory only as long as its cluster, and a pool may outlive any validity period.
NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59)
MISSING_CRYPTOGRAPHY = (
    "backend='dask' starts its own LocalCluster with TLS credentials made for it, so that no "
    "other local user can run code on it, and making them needs the 'cryptography' package: "
    'pip install "jobpool[dask]" (or start a cluster yourself and pass address= or client=)'
)


def temporary_security() -> Any:
    """A ``distributed.Security`` that trusts one new key, for every role, in memory only."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        raise ImportError(MISSING_CRYPTOGRAPHY) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobpool-dask-cluster")])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a worker's clock may lag
        .not_valid_after(NO_EXPIRY)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    roles = ("client", "scheduler", "worker")
    return _distributed().Security(
        require_encryption=True,
        tls_ca_file=certificate_pem,
        **{f"tls_{role}_cert": certificate_pem for role in roles},
        **{f"tls_{role}_key": key_pem for role in roles},
    )


def start_local_cluster(workers: int) -> tuple[Any, Any]:
    """A LocalCluster of worker processes on loopback with room for ``workers`` jobs at once,
    which only this process can use (see the module's docstring)."""
    if install_hooks():
        worker_class: Any = OwnNanny
    else:  # pragma: no cover - depends on the installed distributed
        refuse_unimportable_main()
        worker_class = distributed.Nanny
    security = temporary_security()
    processes = max(1, min(workers, os.cpu_count() or 1))
    threads = -(-workers // processes)
    own_settings = {
        "distributed.scheduler.allowed-failures": OWN_CLUSTER_ALLOWED_FAILURES,
        # The nannies hand their settings to the worker processes they start.
        "distributed.scheduler.http.routes": [],
        "distributed.worker.http.routes": [],
    }
    with dask.config.set(own_settings):
        cluster = _distributed().LocalCluster(
            security=security,
            n_workers=processes,
            threads_per_worker=threads,
            processes=True,
            worker_class=worker_class,
            host="127.0.0.1",
            # No dashboard; the scheduler's HTTP server (no routes, see above) always starts:
            # on a free loopback port, not on 8787 (which another cluster may hold).
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
    try:
        client = new_client(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster, client
