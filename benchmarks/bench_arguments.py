"""The per-call cost of checking a tool call's arguments: parse, validate, convert (µs a call).

    .venv/bin/python benchmarks/bench_arguments.py            # best of 7 rounds of 2000 calls each

What a step pays per tool call before the tool runs (`check_arguments`, the inline path: the
arguments are small). Best of several rounds, so a busy machine inflates the figures less; still,
compare figures taken one after the other on the same machine, and say the load.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any, TypedDict

from annotated_types import Ge, MaxLen  # comes with pydantic (a test dependency)

from agentloop import InputBudget, build_tool
from agentloop._tools.arguments import check_arguments  # the unit measured; internal on purpose


@dataclasses.dataclass
class Item:
    name: str
    qty: int


def flat(x: int, label: str) -> None: ...


def formats(at: dt.datetime, ref: uuid.UUID, n: int) -> None: ...


def nested(items: list[Item], tags: list[str]) -> None: ...


def decimal(amount: Decimal, note: str) -> None: ...


def duration(wait: dt.timedelta, note: str) -> None: ...


class Node(TypedDict):
    v: int
    kids: list[Node | int]


def tree(x: Node) -> None: ...


def constrained(n: Annotated[int, Ge(0)], q: Annotated[str, MaxLen(100)]) -> None: ...


CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "flat (x: int, label: str)": (flat, {"x": 3, "label": "abc"}),
    "formats (datetime, UUID, int)": (
        formats,
        {"at": "2024-01-02T03:04:05", "ref": str(uuid.UUID(int=7)), "n": 1},
    ),
    "nested (list[dataclass], list[str])": (
        nested,
        {"items": [{"name": "a", "qty": 1}, {"name": "b", "qty": 2}], "tags": ["x", "y"]},
    ),
    "decimal (Decimal, str)": (decimal, {"amount": "12.50", "note": "n"}),
    "duration (timedelta, str)": (duration, {"wait": "PT1H30M", "note": "n"}),
    "constrained (Ge(0) int, MaxLen str)": (constrained, {"n": 3, "q": "abc"}),
}


def hostile_tree(depth: int, width: int) -> dict[str, Any]:
    """~440 KB: `width` leaves under a chain `depth` deep (the union at every level was size x depth)."""
    node: dict[str, Any] = {"v": 0, "kids": [{"v": 1, "kids": []} for _ in range(width)]}
    for _ in range(depth):
        node = {"v": 0, "kids": [node]}
    return {"x": node}


def measure(fn: Any, args: dict[str, Any], calls: int, rounds: int) -> float | None:
    try:
        tool = build_tool(fn, sandbox="thread")
    except Exception:  # a type this version refuses
        return None
    raw, budget = json.dumps(args), InputBudget()
    assert check_arguments(tool, raw, budget, True).kwargs is not None  # type: ignore[union-attr]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            check_arguments(tool, raw, budget, True)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    for label, (fn, args) in CASES.items():
        us = measure(fn, args, calls=2000, rounds=7)
        print(f"{label:40} {'refused' if us is None else f'{us:7.2f} µs/call'}")
    us = measure(tree, hostile_tree(10, 20_000), calls=1, rounds=2)
    print(f"{'hostile recursive union, 440 KB':40} {'refused' if us is None else f'{us / 1e6:7.2f} s/call'}")


if __name__ == "__main__":
    main()
