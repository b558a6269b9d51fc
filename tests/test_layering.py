"""The house rules on imports (docs/architecture.md), checked from the source.

- No import cycle between agentloop's modules (function-level imports count; only imports under
  `if TYPE_CHECKING:` are exempt, since they never run).
- The integrations (temporal, mcp, otel, the testing kit, the run inspector) are built on the public
  API (`agentloop`, `agentloop.abc`), never on a private module of the core. What is left of that debt
  is the allow-list below, each entry with its reason; a new private import fails, and so does an
  entry that is no longer needed (so the list only shrinks).
- The import-linter contracts in pyproject.toml hold (when import-linter is installed, as in CI).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agentloop"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> dict[str, int]:
    """The agentloop modules `module` imports at run time (any depth in the file): name -> line."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: dict[str, int] = {}

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from . import _json` imports the module agentloop._json, not the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            target = _resolve(name) if name.startswith("agentloop") else None
            if target and target != module:
                found.setdefault(target, node.lineno)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return components


def test_the_package_has_no_import_cycle() -> None:
    graph = {m: set(imports_of(m)) for m in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check above could pass by finding nothing at all: show it finds a real circle.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_scanner_sees_lazy_and_relative_imports_but_not_type_checking_ones() -> None:
    assert "agentloop._sandbox" in imports_of("agentloop._tools.executors")  # inside a method (first use)
    assert "agentloop._json" in imports_of("agentloop._tools.caller")  # `from .. import _json`
    assert "agentloop._seams" not in imports_of("agentloop._tools.registry")  # only under `if TYPE_CHECKING:`


INTEGRATIONS = ("agentloop.temporal", "agentloop.mcp", "agentloop.otel", "agentloop.testing", "agentloop.ui")

# module -> private core modules it may still import, each with the reason. TODO(#16): each entry is
# a seam still to be named publicly; remove the entry when it is.
ALLOWED: dict[str, dict[str, str]] = {}  # all paid: Temporal repairs ids with agentloop.abc's seam


def _allowed(module: str) -> set[str]:
    return {
        name if name.startswith("agentloop.") else f"agentloop.{name}" for name in ALLOWED.get(module, {})
    }


def _private_core_imports(module: str) -> set[str]:
    own = next(i for i in INTEGRATIONS if module == i or module.startswith(i + "."))
    return {
        target
        for target in imports_of(module)
        if not target.startswith(own) and any(part.startswith("_") for part in target.split(".")[1:])
    }


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if any(m == i or m.startswith(i + ".") for i in INTEGRATIONS))
)
def test_integrations_use_no_private_core_module(module: str) -> None:
    private = _private_core_imports(module)
    new = private - _allowed(module)
    assert not new, (
        f"{module} imports private core modules {sorted(new)}: import the name from `agentloop` or "
        "`agentloop.abc` (add it there if it is missing; see docs/architecture.md, 'Seams')"
    )
    stale = _allowed(module) - private
    assert not stale, f"{module} no longer imports {sorted(stale)}: remove them from ALLOWED"


def test_mcp_otel_and_the_testing_kit_entry_points_are_on_the_public_api() -> None:
    # The modules whose debt is paid: nothing of theirs may appear in ALLOWED again.
    paid = sorted(m for m in MODULES if m.startswith(("agentloop.testing", "agentloop.mcp")))
    for module in ("agentloop.otel", "agentloop.ui._cli", *paid):
        assert _private_core_imports(module) == set()
        assert module not in ALLOWED


def test_every_module_has_a_floor() -> None:
    # A module left out of the `layers` contract is not checked by it: a new module must be placed.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    children = {m.split(".")[1] for m in MODULES if m.count(".") >= 1}
    assert children - placed == set(), "add these modules to a floor in pyproject.toml (docs/architecture.md)"


def test_the_import_linter_contracts_hold() -> None:
    pytest.importorskip("importlinter", reason="import-linter is in the test extra; CI has it")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_logo=True, no_cache=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
