"""The one module that says which Linux-only mechanism jobpool uses (``jobpool._platform``), its
testing switches, and ``import jobpool`` with the thread backend where nothing POSIX-only is.

Windows itself cannot be run here: a child interpreter takes the POSIX-only modules and ``os``,
``signal``, ``select``, ``socket`` and ``mmap`` names away (after importing the parts of the
standard library that have Windows branches of their own), then imports jobpool and uses the
thread backend and its two stdlib dialects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import WAIT
from jobpool import _platform

TESTS = os.path.dirname(os.path.abspath(__file__))


def _child(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOOL_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=WAIT,
    )


def test_portable_turns_every_mechanism_off() -> None:
    assert _platform.read_switches({"JOBPOOL_PORTABLE": "1"}) == set(_platform.MECHANISMS)
    assert _platform.read_switches({"JOBPOOL_PORTABLE": "0"}) == set()
    assert _platform.read_switches({}) == set()


def test_disable_turns_off_the_ones_named() -> None:
    assert _platform.read_switches({"JOBPOOL_DISABLE": "memfd, pidfd"}) == {"memfd", "pidfd"}
    assert _platform.read_switches({"JOBPOOL_DISABLE": ""}) == set()


def test_a_typo_is_an_error_naming_the_variable_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"JOBPOOL_DISABLE names 'memdf'.*memfd, pidfd"):
        _platform.read_switches({"JOBPOOL_DISABLE": "memdf"})
    with pytest.raises(ValueError, match=r"JOBPOOL_PORTABLE='yes' is not understood.*set it to 1"):
        _platform.read_switches({"JOBPOOL_PORTABLE": "yes"})


def test_the_switches_reach_every_process_that_reads_them() -> None:
    script = """
        import json
        from jobpool import _platform
        print(json.dumps([_platform.PORTABLE, _platform.describe()]))
    """
    portable = _child(script, JOBPOOL_PORTABLE="1")
    assert portable.returncode == 0, portable.stderr
    assert json.loads(portable.stdout) == [True, dict.fromkeys(_platform.MECHANISMS, False)]
    one = _child(script, JOBPOOL_DISABLE="pidfd")
    assert one.returncode == 0, one.stderr
    is_portable, facts = json.loads(one.stdout)
    assert not is_portable and facts["pidfd"] is False
    if sys.platform.startswith("linux"):
        assert facts["proc"] is True and facts["epoll"] is True
    typo = _child(script, JOBPOOL_DISABLE="nope")
    assert typo.returncode != 0 and "JOBPOOL_DISABLE names 'nope'" in typo.stderr


def test_import_and_the_thread_backend_need_nothing_posix_only() -> None:
    done = subprocess.run(
        [sys.executable, os.path.join(TESTS, "without_posix.py")],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok"), done.stdout
    loaded = done.stdout.split(" ", 1)[1]
    assert "_process" not in loaded, "the thread backend imported the process backend"


def test_every_module_imports_without_posix() -> None:
    """Not run there, but importable: the process backend's modules load without POSIX-only
    names (what they need is looked up when used, through ``_platform``)."""
    done = subprocess.run(
        [sys.executable, os.path.join(TESTS, "without_posix.py"), "--import-every-module"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "failed: []\n", done.stdout


def test_a_sockets_unread_bytes_are_known_where_outq_is_and_nowhere_else() -> None:
    """``unsent_bytes`` counts what the reader has not read yet (with the kernel's overhead,
    a few percent); on a pipe, or without ``outq``, it says it does not know, as
    ``send_buffer`` does: then only small jobs are sent ahead (``_send_ahead``)."""
    import socket

    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        assert _platform.send_buffer(write_end, 1 << 20) is None
        assert _platform.unsent_bytes(write_end) is None
        buffer = _platform.send_buffer(ours.fileno(), 1 << 20)
        if not _platform.OUTQ:
            assert buffer is None and _platform.unsent_bytes(ours.fileno()) is None
            return
        assert buffer is not None and buffer >= 200_000
        assert _platform.unsent_bytes(ours.fileno()) == 0
        ours.sendall(b"x" * 100_000)
        unsent = _platform.unsent_bytes(ours.fileno())
        assert unsent is not None and 100_000 <= unsent < 2 * 100_000
        received = 0
        while received < 100_000:
            received += len(theirs.recv(1 << 20))
        assert _platform.unsent_bytes(ours.fileno()) == 0
    finally:
        ours.close()
        theirs.close()
        os.close(read_end)
        os.close(write_end)
