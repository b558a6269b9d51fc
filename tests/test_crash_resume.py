"""Durable runs survive SIGKILL in every crash window: no duplicate, no lost execution, no lost outcome.

Each trial runs a 5-step agent (2-3 concurrent tool calls a step, idempotent and not, then a
final answer) in a subprocess (tests/crash_worker.py) that is killed with SIGKILL, then resumed
until a resume finishes. `crash_harness.check` then holds the journal to the contract exactly
(which calls ran how often, in which attempt, what each outcome must be, that every entry is
where it belongs, that the run ends with its `end` entry); see tests/crash_harness.py.

- `test_crash_window`: the worker kills itself at a named checkpoint, so every window is hit
  on every suite run: a model request, before / mid-commit / after each kind of journal write
  (the final answer's commit and the `end` entry included), between a call's start and its side
  effect, between its side effect and its outcome; some twice in a row (a crash during the
  resume that follows a crash).
- `test_outside_kills_over_the_whole_run`: kills from outside at moments spread uniformly
  (stratified) over the measured duration of a whole run on this machine, now.

The many-random-kills version is `benchmarks/crash_soak.py`; `benchmarks/mutate_journal.py`
proves these tests fail for each way durability can break.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import crash_harness as harness
import pytest

# (kill of the first attempt, kill of the resume, ...): each a crash_worker.py checkpoint
WINDOWS: list[tuple[str, ...]] = [
    ("model.request@1",),
    ("append.before.model@2",),
    ("append.commit.model@2",),
    ("append.after.model@2",),  # the answer is committed, none of its calls started: all must run
    ("append.before.tool_start.write@3",),
    ("append.commit.tool_start.write@3",),
    ("append.after.tool_start.write@3",),  # started, no side effect yet: outcome unknown
    ("tool.before.write@3",),
    ("tool.after.write@3",),  # side effect done, no outcome: never run again
    ("append.before.tool_end.write@3",),
    ("append.commit.tool_end.write@3",),
    ("append.after.tool_end.write@3",),  # one outcome committed while siblings run
    ("append.after.tool_start.read@2",),
    ("tool.before.read@2",),
    ("tool.after.read@4",),  # idempotent: run again
    ("append.commit.tool_end.read@4",),
    ("append.after.tool_end.read@2",),
    ("model.request@6",),
    ("append.commit.model@6",),
    ("append.after.model@6",),  # the final-answer window: answer committed, "end" not
    ("append.before.end",),
    ("append.commit.end",),
    # a crash during the resume that follows a crash
    ("tool.after.write@1", "append.commit.tool_end.write@1"),  # deciding outcome_unknown, mid-commit
    ("tool.after.write@1", "append.after.tool_end.write@1"),
    ("append.after.model@6", "append.commit.end"),  # the resume writing the missing "end"
    ("append.after.model@2", "tool.after.write@2"),
    ("append.after.tool_start.read@4", "tool.after.read@4"),
]


@pytest.mark.parametrize("kills", WINDOWS, ids=["+".join(k) for k in WINDOWS])
def test_crash_window(kills: tuple[str, ...], tmp_path: Path) -> None:
    backend = harness.env_backend(WINDOWS.index(kills))
    runs, summary = harness.trial(tmp_path, "crash", backend, kills=kills)
    assert [r.code for r in runs] == [harness.KILLED] * len(kills) + [0]
    assert summary["calls"] == 13 and summary["ok"] + summary["outcome_unknown"] == 13


OUTSIDE_KILLS = 12


def test_outside_kills_over_the_whole_run(tmp_path: Path) -> None:
    seed = int(
        os.environ.get("CRASH_SEED") or random.randrange(2**32)
    )  # CRASH_SEED=... reproduces the moments
    rng = random.Random(seed)
    print(f"crash test seed={seed}")  # shown with the captured output when the test fails
    # A whole run on this machine now, per backend: its events (effects lines, from "GO" to the
    # "end" entry) and the time from each to the next. Each kill picks an event, stratified so the
    # kills cover the whole run, and lands a random fraction of that event's gap after it. (A
    # moment after process start would mostly land in start-up or exit: under load they take
    # 10x longer than the run itself.)
    whole = {b: harness.trial(tmp_path, f"whole_{b}", b)[0][0] for b in ("asyncio", "trio")}
    events = min(len(r.events) for r in whole.values())
    picks = [int((i + rng.random()) / OUTSIDE_KILLS * events) for i in range(OUTSIDE_KILLS)]
    rng.shuffle(picks)
    landed: list[tuple[int, int | None]] = []
    for i, k in enumerate(picks):
        backend = harness.env_backend(i)
        at = (k, rng.random() * harness.event_gaps(whole[backend])[k])
        try:
            runs, _ = harness.trial(tmp_path, f"out_{i}", backend, outside=(at,))
        except AssertionError as e:
            raise AssertionError(
                f"seed {seed}, kill {at[1]:.4f} s after event {k} ({whole[backend].events[k][1]}): {e}"
            ) from None
        landed.append((k, runs[0].appends if runs[0].code == harness.KILLED else None))
    print(
        f"whole run: {events} events, {[round(r.events[-1][0], 3) for r in whole.values()]} s; kills (after event #, "
        f"journal writes started of {harness.WHOLE_RUN_APPENDS} when killed; None: it had finished): {sorted(landed)}"
    )
    assert sum(n is not None for _, n in landed) >= OUTSIDE_KILLS // 2  # most kills land in the run
