"""Fuzz (issue #15), a few dozen examples per backend: generated HTTP responses and damaged
journal files, each through a real run, must end in a final answer, a tool error fed back, or a
typed `AgentloopError`; never a raw exception, never a run that does not end.

The strategies and the runner are `benchmarks/fuzz_http.py`, which runs ~10,000 of them.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import fuzz_http  # after the sys.path line above


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_generated_http_responses_end_typed(backend: str) -> None:
    outcomes: Counter[str] = Counter()
    fuzz_http.fuzz_http(30, backend, outcomes, strict=True)
    assert sum(outcomes.values()) == 30
    assert not [k for k in outcomes if not k.startswith(("typed ", "final answer", "tool error fed back"))]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_damaged_journals_end_typed(backend: str, tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    fuzz_http.fuzz_journal(20, backend, outcomes, str(tmp_path), strict=True)
    assert sum(outcomes.values()) == 20
    assert not [k for k in outcomes if not k.startswith(("typed ", "final answer", "ended"))]


def test_a_finding_fails_the_strict_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz test can fail: an example that ends in a raw exception (or a hang) is a finding."""

    async def finding(*_args: object) -> str:
        return "FINDING raw RuntimeError: boom"

    monkeypatch.setattr(fuzz_http, "http_example", finding)
    with pytest.raises(AssertionError, match="FINDING raw RuntimeError"):
        fuzz_http.fuzz_http(3, "asyncio", Counter(), strict=True)
