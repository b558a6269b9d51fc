"""Usage of a journaled outer run after a crash: the tokens of its agent tools' inner runs count
exactly once (issue 17, part 3). A worker (tests/nested_crash_worker.py) is SIGKILLed right after
a chosen journal commit (an inner run's answer, an inner run's end before the outer call's
outcome, the outer call's outcome, the outer final answer) and a new process resumes the run.
The resumed result's usage must equal what the journals hold: every answered model request is
committed once (a request answered but not committed before the kill is asked again, and only
the answer that was committed counts)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import crash_harness as harness
import pytest
import warm_fork

from agentloop import SQLiteJournal

WORKER = Path(__file__).with_name("nested_crash_worker.py")
KILLS = ["model@inner#1", "model@inner#3", "end@inner#1", "tool_end@outer#1", "model@outer#2", "end@inner#2"]


def attempt(journal: Path, kill: str, backend: str, out: Path) -> int:
    args = [str(journal), "outer-1", kill, backend, str(out)]
    proc = warm_fork.run(WORKER, args, preload=harness.PRELOAD, timeout=120)  # a real process, forked warm
    assert proc.returncode in (0, -9), proc.stderr[-3000:]
    return proc.returncode


@pytest.mark.parametrize("kill", KILLS)
def test_the_outer_usage_counts_each_inner_request_once_after_a_crash(kill: str, tmp_path: Path) -> None:
    backend = "trio" if KILLS.index(kill) % 2 else "asyncio"
    journal, out = tmp_path / "runs.db", tmp_path / "usage.json"
    assert attempt(journal, kill, backend, out) == -9, f"the kill point {kill} was not reached"
    assert attempt(journal, "-", backend, out) == 0
    usage = json.loads(out.read_text())
    j = SQLiteJournal(journal)
    try:
        runs = [r.run_id for r in anyio.run(j.list_runs)]
        committed = sum(e.kind == "model" for rid in runs for e in j.load_sync(rid).entries)
    finally:
        j.close()
    assert len(runs) == 3  # the outer run and its two inner runs
    assert committed == 6  # 2 outer answers + 2 x 2 inner answers, each committed once
    assert usage == {"requests": committed, "total_tokens": 15 * committed}
