"""The public API's types, checked by mypy: tests/typing/pass_*.py must pass, fail_*.py must fail.

A line of a fail_*.py file that must be reported ends with ``# E: <error code>``; mypy must report
exactly those lines with those codes, and nothing else. (mypy is in the ``test`` extra.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "typing"
ROOT = HERE.parent.parent
# The tests' fake backend is checked against the Backend protocol with the public API's files.
PASSING = [*sorted(HERE.glob("pass_*.py")), HERE.parent / "fake_backend.py"]
FAILING = sorted(HERE.glob("fail_*.py"))
EXPECTED = re.compile(r"#\s*E:\s*(?P<code>[a-z-]+)\s*$")
REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def expected_errors(path: Path) -> set[tuple[int, str]]:
    found = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = EXPECTED.search(line)
        if match:
            found.add((number, match["code"]))
    return found


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[int, str]]]:
    """One mypy run over every file (a cold run costs seconds); errors grouped by file name."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--no-pretty",
            "--hide-error-context",
            "--cache-dir",
            str(cache),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            *map(str, PASSING + FAILING),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if result.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        pytest.fail(f"mypy did not run:\n{result.stdout}\n{result.stderr}")
    errors: dict[str, set[tuple[int, str]]] = {}
    for line in result.stdout.splitlines():
        match = REPORTED.match(line.strip())
        if match:
            name = Path(match["path"]).name
            errors.setdefault(name, set()).add((int(match["line"]), match["code"]))
        elif ": error:" in line:
            pytest.fail(f"unparsed mypy error: {line}")
    return errors


def test_there_are_typing_files() -> None:
    assert PASSING and len(FAILING) >= 4
    for path in FAILING:
        assert expected_errors(path), f"{path.name} marks no expected error"


@pytest.mark.parametrize("path", PASSING, ids=lambda p: p.name)
def test_passes(path: Path, reported: dict[str, set[tuple[int, str]]]) -> None:
    assert reported.get(path.name, set()) == set()


@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.name)
def test_fails_as_expected(path: Path, reported: dict[str, set[tuple[int, str]]]) -> None:
    assert reported.get(path.name, set()) == expected_errors(path)
