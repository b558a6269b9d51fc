"""The house's size rules, checked: modules, functions and public signatures stay small.

docs/architecture.md and CONTRIBUTING.md promise a newcomer small rooms: no module over ~400
lines, no function over ~50 (its docstring not counted), no public function with more than 8
parameters (configuration is grouped into frozen objects instead, as `RunLimits` / `Limits` /
`InputBudget` do). What still breaks a rule is listed in `KNOWN` with its size today: an entry
may shrink or go, never grow, and nothing new may join it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agentloop"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
MAX_PUBLIC_PARAMETERS = 8

# (kind, where) -> the size it has today. The debts of the restructuring (#16), each to be paid.
KNOWN: dict[tuple[str, str], int] = {}  # all paid (the last: create_worker's 14 keywords, WorkerOptions)


def _sizes() -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            found[("module", rel)] = lines
        _walk(ast.parse(source), rel, "", found)
    return found


def _walk(node: ast.AST, rel: str, prefix: str, found: dict[tuple[str, str], int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            _walk(child, rel, f"{prefix}{child.name}.", found)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            where = f"{rel}:{prefix}{child.name}"
            length = _body_lines(child)
            if length > MAX_FUNCTION_LINES:
                found[("function", where)] = length
            args = child.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            count = len([n for n in names if n not in ("self", "cls")])
            if count > MAX_PUBLIC_PARAMETERS and not child.name.startswith("_"):
                found[("parameters", where)] = count
            _walk(child, rel, f"{prefix}{child.name}.", found)


def _body_lines(func: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from `def` to the end, without the docstring (it explains; it is not code to read)."""
    total = (func.end_lineno or func.lineno) - func.lineno + 1
    first = func.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        total -= (first.end_lineno or first.lineno) - first.lineno + 1
    return total


SIZES = _sizes()


def test_nothing_new_breaks_a_size_rule_and_no_known_debt_grows() -> None:
    # One test over every finding (a parametrization over none would be skipped, not passed).
    limits = {"module": MAX_MODULE_LINES, "function": MAX_FUNCTION_LINES}
    broken = []
    for (kind, where), size in sorted(SIZES.items()):
        unit = "parameters" if kind == "parameters" else "lines"
        limit = limits.get(kind, MAX_PUBLIC_PARAMETERS)
        if (kind, where) not in KNOWN:
            broken.append(
                f"{where}: {size} {unit} (the house's limit is {limit}): split it (modules by topic,"
                " functions by step; parameters into a frozen config object)"
            )
        elif size > KNOWN[(kind, where)]:
            broken.append(
                f"{where} grew from {KNOWN[(kind, where)]} to {size}: a known debt, pay it down instead"
            )
    assert not broken, "\n".join(broken)


def test_every_known_debt_is_still_owed() -> None:
    # A paid debt leaves KNOWN, so the list only shrinks and never hides a new one.
    paid = [key for key in KNOWN if key not in SIZES]
    assert not paid, f"paid, remove from KNOWN: {paid}"


def test_the_rules_measure_what_they_say() -> None:
    # The scanner itself: a 60-line function with a 20-line docstring is 40 lines of code.
    doc = '    """' + "\n".join(["x"] * 20) + '"""\n'
    body = "".join(f"    a{i} = {i}\n" for i in range(39))
    tree = ast.parse("def f(a, b, c, d, e, f, g, h, i):\n" + doc + body)
    found: dict[tuple[str, str], int] = {}
    _walk(tree, "m.py", "", found)
    assert ("function", "m.py:f") not in found
    assert found[("parameters", "m.py:f")] == 9
