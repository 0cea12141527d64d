"""The docs and examples run: every script in examples/, every ```python block in the docs.

Each example runs as a script in a fresh interpreter and must exit 0. The ```python blocks of a
Markdown file are written, in order, to one temporary script that runs in a fresh interpreter, so
a later block can use what an earlier block defined. A block whose first line is
``# file: NAME.py`` is written to that module beside the script instead, for pages that show a
module and the script importing it. A block that is not meant to run says so with a
``# doctest: skip`` comment (or is fenced as ```text). An example or a page that imports a package
that is not installed (``distributed``, ``tqdm``...) is skipped, not failed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
PAGES = sorted(
    [p for p in [ROOT / "README.md"] if p.exists()] + list((ROOT / "docs").glob("**/*.md"))
)
SKIP_MARKER = "# doctest: skip"
MODULE_MARKER = re.compile(r"^# file: (?P<name>[A-Za-z_][A-Za-z0-9_]*\.py)[ \t]*$")
TIMEOUT = 120  # seconds; each script should take a few

# Optional packages named beside the scripts that need them, in case an import is hidden
# (inside a function, behind a try) where the scan below does not look.
OPTIONAL = {
    "dask_cluster.py": ["distributed"],
    "progress_bar.py": ["tqdm"],
    # Its blocks use Pool(backend="dask") without importing it; its own cluster needs both.
    "dask.md": ["distributed", "cryptography"],
    "progress.md": ["tqdm"],
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python / ```py blocks of a Markdown text, as (first line number, dedented code)."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i + 1  # 1-based number of the opening fence's line
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lstrip("{.").rstrip("}").lower()
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence) and set(stripped) <= {fence[0]}:
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if language in ("python", "py", "python3"):
            blocks.append((start, "\n".join(body) + "\n"))
        i += 1
    return blocks


def runnable_blocks(page: Path) -> list[tuple[int, str]]:
    return [
        (line, code)
        for line, code in python_blocks(page.read_text(encoding="utf-8"))
        if SKIP_MARKER not in code
    ]


def imported_modules(source: str) -> set[str]:
    """Top-level names of the modules a script imports, except imports guarded by a try."""
    guarded: set[int] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for child in ast.walk(node):
                guarded.add(id(child))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def skip_if_missing(source: str, extra: Iterable[str] = (), provided: Iterable[str] = ()) -> None:
    """Skip the test if ``source`` imports a module that is neither installed nor ``provided``."""
    missing = sorted(
        name
        for name in (imported_modules(source) | set(extra)) - set(provided)
        if importlib.util.find_spec(name) is None
    )
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which is not installed")


def run_script(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    try:
        return subprocess.run(
            [sys.executable, str(path)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{path.name} did not finish within {TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}")


# Scripts and pages that start a Dask cluster take seconds each, and the examples repeat what
# the pages show: run by CI (see conftest.py).
SLOW = {"dask.md", *(path.name for path in EXAMPLES)}
# Pages whose code uses a Linux-only mechanism (jobpool._platform.MECHANISMS): marked linux_only,
# so skipped where one is missing or turned off (JOBPOOL_PORTABLE=1 in CI), saying which.
PAGE_MECHANISMS = {"long-runs.md": ("proc",)}  # job_memory_limit reads /proc


def _params(paths: list[Path], ids: list[str]) -> list[Any]:
    return [pytest.param(path, id=name, marks=_marks(path)) for path, name in zip(paths, ids)]


def _marks(path: Path) -> list[Any]:
    marks: list[Any] = [pytest.mark.slow] if path.name in SLOW else []
    mechanisms = PAGE_MECHANISMS.get(path.name)
    if mechanisms:  # skipped where one is missing or off, saying which (tests/conftest.py)
        marks.append(pytest.mark.linux_only(*mechanisms))
    return marks


@pytest.mark.parametrize("script", _params(EXAMPLES, [p.name for p in EXAMPLES]))
def test_example_runs(script: Path, tmp_path: Path) -> None:
    skip_if_missing(script.read_text(encoding="utf-8"), OPTIONAL.get(script.name, []))
    done = run_script(script, tmp_path)
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow
def test_worker_lines_stay_whole(tmp_path: Path) -> None:
    """Two workers print at once: each line is written whole, never mixed with another's."""
    done = run_script(ROOT / "examples" / "per_worker_database.py", tmp_path)
    assert done.returncode == 0, done.stderr
    workers = [line for line in done.stdout.splitlines() if "process " in line]
    assert len(workers) >= 4, done.stdout
    for line in workers:
        assert re.fullmatch(r"  process \d+: (connected to words\.db|closing its connection)", line)


@pytest.mark.slow
def test_expected_crash_output_is_announced(tmp_path: Path) -> None:
    done = run_script(ROOT / "examples" / "crash_isolation.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Two jobs below crash their worker process on purpose.")
    assert "Fatal Python error: Segmentation fault" in done.stdout  # named before it comes


def test_an_example_that_needs_an_extra_says_which(tmp_path: Path) -> None:
    """Without the distributed package, the Dask example names the extra to install."""
    hide = "import sys, runpy; sys.modules['distributed'] = None; runpy.run_path(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", hide, str(ROOT / "examples" / "dask_cluster.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert 'pip install "jobpool[dask]"' in done.stderr, done.stderr
    assert 'pip install ".[dask]"' in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


PAGES_WITH_CODE = [p for p in PAGES if runnable_blocks(p)]


@pytest.mark.parametrize(
    "page", _params(PAGES_WITH_CODE, [str(p.relative_to(ROOT)) for p in PAGES_WITH_CODE])
)
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    parts = []
    modules: dict[str, str] = {}
    for line, code in runnable_blocks(page):
        first = MODULE_MARKER.match(code.split("\n", 1)[0])
        if first is not None:
            modules[first["name"]] = modules.get(first["name"], "") + code
        else:
            parts.append(f"# --- {page.name}, block at line {line} ---\n{code}")
    source = "\n".join(parts)
    skip_if_missing(
        source + "\n".join(modules.values()),
        OPTIONAL.get(page.name, []),
        provided=[name[:-3] for name in modules],
    )
    for name, code in modules.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    script = tmp_path / f"{page.stem.replace('-', '_')}_blocks.py"
    script.write_text(source, encoding="utf-8")
    done = run_script(script, tmp_path)
    assert done.returncode == 0, (
        f"the code blocks of {page.relative_to(ROOT)} failed (exit code {done.returncode})\n"
        f"{done.stdout}\n{done.stderr}"
    )


def test_block_extraction() -> None:
    text = (
        "intro\n```python\nx = 1\n```\n"
        "```text\nnot code\n```\n"
        "!!! note\n    ```python\n    y = 2\n    ```\n"
        "````python\n```\nz = 3\n````\n"
        "```python\n# doctest: skip\nraise SystemExit(1)\n```\n"
    )
    codes = [code for _, code in python_blocks(text)]
    assert codes == ["x = 1\n", "y = 2\n", "```\nz = 3\n", "# doctest: skip\nraise SystemExit(1)\n"]
    assert imported_modules(
        "import a.b\nfrom c import d\ntry:\n    import e\nexcept ImportError:\n    pass\n"
    ) == {"a", "c"}


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for needed in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(needed) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"{needed} is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "api" / "index.html").exists()
