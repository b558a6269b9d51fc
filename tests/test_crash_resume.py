"""Durable runs survive SIGKILL at random points: 0 duplicates of finished calls, 0 lost results.

Each trial runs a 5-step agent (2-3 tool calls a step, idempotent and not) in a subprocess
(tests/crash_worker.py) that is killed with SIGKILL, either by itself at a random checkpoint
(model request, before / during / after a tool's side effect, before a journal write,
mid-commit, after a commit) or from outside at a random moment; then resumed, maybe killed
again, until a resume finishes. The side-effect file and the journal are then checked.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from agentloop import _json
from agentloop._journal import SQLiteJournal, replay

WORKER = Path(__file__).with_name("crash_worker.py")
MIN_KILLS = 60
MAX_KILLS_PER_RUN = 4


def _attempt(journal: Path, effects: Path, run_id: str, rng: random.Random, backend: str) -> int:
    self_kill = rng.random() < 0.75
    kill_at = rng.randint(1, 90) if self_kill else 0
    cmd = [sys.executable, str(WORKER), str(journal), str(effects), run_id, str(kill_at), backend]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not self_kill:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready": imports done, the run starts now
        time.sleep(rng.uniform(0, 0.03))  # not waiting for anything: picking a random moment to kill
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def _check(journal: Path, effects: Path, run_id: str) -> None:
    j = SQLiteJournal(journal)
    try:
        run = j.load_sync(run_id)
    finally:
        j.close()
    state = replay(run)
    assert state.final == ("final", "all steps done")
    msgs = state.messages
    calls: dict[str, tuple[str, str]] = {}  # token -> (tool, call id)
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            assert [x.get("tool_call_id") for x in msgs[i + 1 : i + 1 + len(ids)]] == ids  # valid transcript
            for c in m["tool_calls"]:
                calls[_json.loads(c["function"]["arguments"])["token"]] = (c["function"]["name"], c["id"])
    records = {r.id: r for r in state.tool_calls}
    assert len(records) == len(calls) == sum(len(m.get("tool_calls") or ()) for m in msgs)

    lines = effects.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    execs = Counter(v for k, v in events if k == "EXEC")
    assert set(execs) <= set(calls), "a tool ran for a call that is not in the journal"
    done_at: dict[str, int] = {}
    resp_at: dict[str, int] = {}
    for i, (k, v) in enumerate(events):
        if k == "DONE":
            done_at.setdefault(v, i)
        elif k == "RESP":
            resp_at.setdefault(v, i)
        elif k == "EXEC":
            assert v not in done_at, f"call {v} ran again after its outcome was committed"
        elif k == "REQ":
            assert v not in resp_at, f"step {v} was requested again after its answer was committed"
    for token, (tool, cid) in calls.items():
        rec = records[cid]
        n = execs[token]
        if tool == "write":
            assert n <= 1, f"non-idempotent call {token} ran {n} times"
        if rec.status == "ok":
            assert rec.content == f"{tool} {token}".replace("write", "wrote") and n >= 1
            assert tool == "read" or n == 1
        else:
            assert rec.status == "outcome_unknown" and tool == "write", (rec.status, tool)
            assert n <= 1


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(2**32))  # CRASH_SEED=... reproduces a run
    rng = random.Random(seed)
    print(f"crash test seed={seed}")  # shown with the captured output when the test fails
    kills = trials = 0
    unknown = 0
    while kills < MIN_KILLS:
        trials += 1
        run_id = f"crash_{trials}"
        journal, effects = tmp_path / "runs.db", tmp_path / f"{run_id}.effects"
        backend = "trio" if trials % 2 else "asyncio"
        killed_here = 0
        while True:
            if killed_here < MAX_KILLS_PER_RUN:
                code = _attempt(journal, effects, run_id, rng, backend)
            else:  # enough: let this one finish
                proc = subprocess.run(
                    [sys.executable, str(WORKER), str(journal), str(effects), run_id, "0", backend],
                    capture_output=True, text=True, timeout=60,
                )
                assert proc.returncode == 0, proc.stderr
                code = 0
            if code == 0:
                break
            killed_here += 1
        kills += killed_here
        try:
            _check(journal, effects, run_id)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, trial {trials}: {e}") from None
        j = SQLiteJournal(journal)
        unknown += sum(r.status == "outcome_unknown" for r in replay(j.load_sync(run_id)).tool_calls)
        j.close()
    assert kills >= MIN_KILLS
    print(f"crash test: seed={seed} trials={trials} kills={kills} outcome_unknown={unknown}")
