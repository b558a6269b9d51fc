"""Tests import through the public API: a name that is public must not be imported from a private module.

A test written against `agentloop._run.sqlite.SQLiteJournal` keeps passing when the public export is
dropped or renamed, so it no longer tests what users get. Private imports stay allowed for names that
have no public home (an internal unit under test on purpose); this scan fails as soon as one of them
becomes public, so the test files follow.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

TESTS = Path(__file__).parent
PUBLIC_MODULES = (
    "agentloop",
    "agentloop.testing",
    "agentloop.temporal",
    "agentloop.mcp",
    "agentloop.otel",
    "agentloop.ui",
    "agentloop.cli",
)


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _public_names(module: ModuleType) -> list[str]:
    """`__all__`, or else what the module defines itself (a helper it merely imports is not exported)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
    ]


def public_homes() -> dict[int, str]:
    """id(object) -> 'public.module.Name' for every public export (objects stay alive in their modules)."""
    homes: dict[int, str] = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in _public_names(module):
            homes.setdefault(id(getattr(module, attr)), f"{name}.{attr}")
    return homes


@functools.cache
def _parsed(path: Path) -> tuple[list[str], ast.Module]:
    """A test file's lines and tree, parsed once per test process: both scans below read every test
    file (~2.5 s of CPU to parse them all)."""
    lines = path.read_text().splitlines()
    return lines, ast.parse("\n".join(lines))


def _sources(tree: ast.AST) -> Iterator[ast.AST]:
    """The file itself plus every string constant that is a Python script of its own (subprocess code)."""
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            try:
                yield ast.parse(node.value)
            except SyntaxError:
                continue


def private_imports(file: ast.Module) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) for every `from <private module> import name` in a test file's tree."""
    for tree in _sources(file):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("agentloop") and _is_private(node.module):
                    for alias in node.names:
                        yield node.lineno, node.module, alias.name


def offenders(files: list[Path], homes: dict[int, str]) -> list[str]:
    found = []
    for path in files:
        for line, module, name in private_imports(_parsed(path)[1]):
            obj = getattr(importlib.import_module(module), name, None)
            if obj is not None and not name.startswith("_") and id(obj) in homes:
                found.append(f"{path.name}:{line}: {module}.{name} is public as {homes[id(obj)]}")
    return found


def test_no_test_imports_a_public_name_from_a_private_module() -> None:
    pytest.importorskip("temporalio")  # agentloop.temporal is one of the public homes
    files = [p for p in sorted(TESTS.glob("*.py")) if p.name != Path(__file__).name]  # its own sample is bait
    found = offenders(files, public_homes())
    assert not found, "import these from their public home:\n" + "\n".join(found)


def test_the_scan_catches_a_public_name_imported_privately(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from agentloop._run.sqlite import SQLiteJournal\n"
        "from agentloop._json import depth_exceeds  # internal unit under test\n"
        'SCRIPT = """\nfrom agentloop._exceptions import JournalError\n"""\n'
    )
    found = offenders([sample], public_homes())
    assert found == [
        "test_sample.py:1: agentloop._run.sqlite.SQLiteJournal is public as agentloop.SQLiteJournal",
        "test_sample.py:2: agentloop._exceptions.JournalError is public as agentloop.JournalError",
    ]


def test_every_remaining_private_import_says_it_is_on_purpose() -> None:
    """A private import is a choice: the line says `# internal unit under test`, so a reader knows why."""
    unmarked = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        lines, tree = _parsed(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agentloop"):
                if _is_private(node.module) and "# internal unit under test" not in lines[node.lineno - 1]:
                    unmarked.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
    assert not unmarked, "mark or replace these private imports:\n" + "\n".join(unmarked)
