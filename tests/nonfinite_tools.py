"""Tools returning non-finite floats, for tests/test_result_nonfinite.py: importable by
"module:qualname", so the "process" and "isolated" sandboxes can run them too."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class Reading:
    mean: float
    note: str | None = None


def stats() -> dict[str, Any]:
    """Statistics of an empty sample, as numpy or statistics-style code returns them."""
    return {"mean": math.nan, "max": -math.inf, "min": math.inf, "n": 0, "spread": None, "ok": 1.5}


def reading() -> Reading:
    return Reading(math.nan)


def bare() -> float:
    return math.inf
