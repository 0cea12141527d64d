"""Each fact of the process backend's bookkeeping has one writer, and a job carries no backend's.

A worker's state and data belong to its ``WorkerHandle``; the set's (the idle count, closing,
broken) to ``Workers``: every other part reports events to their methods and asks them
questions (see ``_process/_handle.py``). This reads the code: an assignment to one of those
fields, or a change to one of their lists, anywhere but in its owner's own methods fails here,
naming the place. And ``Job`` and ``JobFuture`` hold nothing of one backend's: what a backend
made of a job is one record (``Serialized``), and a thread's bookkeeping is the thread
backend's.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

import jobpool
from jobpool._job import Job, JobFuture, Serialized

PROCESS = Path(jobpool.__file__).resolve().parent / "_process"

# field -> the class whose methods alone may assign it (on ``self``)
HANDLE = "WorkerHandle"
WORKERS = "Workers"
OWNERS = {
    **dict.fromkeys(
        (
            "state",
            "job",
            "ahead",
            "deadline",
            "started_at",
            "recalled_at",
            "job_seconds",
            "jobs_done",
            "failure",
            "protocol_breach",
            "replied_after_kill",
            "exited_from",
            "lease",
            "shipped",
        ),
        HANDLE,
    ),
    **dict.fromkeys(
        ("idle_count", "closing", "terminating", "broken", "started", "missing", "retry_at"),
        WORKERS,
    ),
    "handles": WORKERS,
}
# Lists and queues whose contents are facts too.
CONTAINERS = {"ahead": HANDLE, "handles": WORKERS}
MUTATORS = {"append", "appendleft", "extend", "pop", "popleft", "remove", "clear", "insert"}


def _owner_of_self(node: ast.expr, classes: list[str]) -> Optional[str]:
    """The class ``node`` is ``self`` of, if it is ``self`` inside a method; else None."""
    if isinstance(node, ast.Name) and node.id == "self" and classes:
        return classes[-1]
    return None


def writes(path: Path) -> list[tuple[int, str, Optional[str], str]]:
    """(line, field, the class writing it on ``self`` or None, how) for each write in ``path``."""
    found: list[tuple[int, str, Optional[str], str]] = []

    def visit(node: ast.AST, classes: list[str]) -> None:
        if isinstance(node, ast.ClassDef):
            classes = [*classes, node.name]
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        flat: list[ast.expr] = []
        for target in targets:
            flat += target.elts if isinstance(target, ast.Tuple) else [target]
        for target in flat:
            if isinstance(target, ast.Attribute) and target.attr in OWNERS:
                found.append(
                    (node.lineno, target.attr, _owner_of_self(target.value, classes), "assigns")
                )
            # A lent pipe: the lease's flag is the handle's fact as well.
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "active"
                and isinstance(target.value, ast.Attribute)
                and target.value.attr == "lease"
            ):
                owner = _owner_of_self(target.value.value, classes)
                found.append((node.lineno, "lease.active", owner, "assigns"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in CONTAINERS
        ):
            owner = _owner_of_self(node.func.value.value, classes)
            found.append((node.lineno, node.func.value.attr, owner, node.func.attr))
        for child in ast.iter_child_nodes(node):
            visit(child, classes)

    visit(ast.parse(path.read_text(), str(path)), [])
    return found


def test_each_worker_fact_is_written_by_its_owner_only() -> None:
    wrong = []
    for path in sorted(PROCESS.glob("*.py")):
        for line, field, writer, how in writes(path):
            owner = HANDLE if field == "lease.active" else OWNERS[field]
            if writer != owner:
                who = f"{writer}'s self" if writer else "another object"
                wrong.append(f"{path.name}:{line} {how} {field} of {who} (its owner: {owner})")
    assert not wrong, "facts written outside their owner:\n" + "\n".join(wrong)


def test_the_walk_finds_writes_from_outside(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "class WorkerHandle:\n"
        "    def run(self, job):\n"
        "        self.job, self.deadline = job, None\n"
        "        self.ahead.append(job)\n"
        "class Workers:\n"
        "    def bury(self, handle):\n"
        "        handle.job = None\n"
        "        handle.ahead.clear()\n"
        "        self.idle_count -= 1\n"
        "        handle.lease.active = False\n"
        "def route(workers):\n"
        "    workers.idle_count -= 1\n"
    )
    assert writes(source) == [
        (3, "job", HANDLE, "assigns"),
        (3, "deadline", HANDLE, "assigns"),
        (4, "ahead", HANDLE, "append"),
        (7, "job", None, "assigns"),
        (8, "ahead", None, "clear"),
        (9, "idle_count", WORKERS, "assigns"),
        (10, "lease.active", None, "assigns"),
        (12, "idle_count", None, "assigns"),
    ]


def test_a_job_holds_nothing_of_one_backend() -> None:
    """What a job is, whatever runs it: its work, its future, its limits (time, memory), its
    priority, its queue slot, its attempts (retries, the same on every backend), and what a
    backend that serializes made of it (one record, the same for process and Dask)."""
    assert set(Job.__slots__) == {
        *("future", "holds_slot", "id", "memory_limit", "priority", "retry", "serialized"),
        *("timeout", "work"),
    }
    assert set(Serialized.__slots__) == {
        *("body", "fn_blobs", "fn_bytes", "fn_key", "inputs", "segment")
    }
    future = JobFuture()
    own = set(vars(future)) | {name for name in vars(JobFuture) if not name.startswith("__")}
    assert not own & {"_reader", "_worker", "_segment", "_killed"}, own
