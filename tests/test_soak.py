"""Worker hygiene, reduced: 1,000 runs back to back and 200 at once (twice) in this process,
through a proxy restarted between phases. No fds, tasks or child processes may be left behind
(exact counts; RSS is only reported). The full soak is `benchmarks/soak.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import soak  # noqa: E402

pytestmark = pytest.mark.anyio


async def test_soak_leaves_nothing_behind(capsys: pytest.CaptureFixture[str]) -> None:
    report = await soak.soak(sequential=1_000, concurrent=200, batches=2, every=250)
    with capsys.disabled():
        curve = ", ".join(f"{runs}:{mb}" for runs, mb in report.to_dict()["rss_curve_mb"])
        print(f"\nsoak: {report.runs_ok} runs in {report.wall_s} s; RSS MB by runs: {curve}")
    assert report.problems == []
    assert report.runs_ok == 1_000 + 20 + 400
    baseline, closed = report.samples[0], report.samples[-1]
    assert (closed.fds, closed.sockets, closed.tasks, closed.children) == (
        baseline.fds,
        baseline.sockets,
        baseline.tasks,
        baseline.children,
    )
    assert report.restarts == 2  # and every run after each restart succeeded (runs_ok above)
