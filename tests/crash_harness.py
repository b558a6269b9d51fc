"""Drives tests/crash_worker.py through crashes and checks the journal against what really ran.

Used by tests/test_crash_resume.py (a fixed set of crash windows, every suite run) and by
benchmarks/crash_soak.py (many random ones). `check` is exact: it is the durability contract of
`_journal.py` written as assertions over two records that the worker keeps independently, the
journal (what was committed, each entry attributed to the attempt that wrote it by its time) and
the effects file (what happened: requests, side effects, returns, where a process died).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import warm_fork

from agentloop import SQLiteJournal, _json
from agentloop.abc import JournalEntry, replay

WORKER = Path(__file__).with_name("crash_worker.py")
STEPS = 5  # as in crash_worker.py
WHOLE_RUN_APPENDS = 6 + 13 + 13 + 1  # model answers, call starts, call outcomes, end
FINAL = "all steps done"
PRELOAD = warm_fork.AGENTLOOP_PRELOAD  # the worker's imports, done once by the server it is forked from
KILLED = -signal.SIGKILL


@dataclass
class Attempt:
    pid: int
    t0: float
    lines: list[list[str]] = field(default_factory=list)
    exit: int | None = None

    @property
    def kill(self) -> list[str] | None:
        """["KILL", point, step, call_id] when the process killed itself."""
        return next((ln for ln in self.lines if ln[0] == "KILL"), None)

    @property
    def outside_kill(self) -> bool:
        return self.exit == KILLED and self.kill is None


@dataclass
class AttemptRun:
    code: int
    seconds: float  # from "ready" (imports done) to exit or kill
    appends: int  # journal writes it started: how far it got (a whole run from the start: 33)
    events: list[tuple[float, str]]  # (seconds after its "GO", what) of each effects line


def run_attempt(
    journal: Path,
    effects: Path,
    run_id: str,
    backend: str,
    kill: str = "-",
    kill_at: tuple[int, float] | None = None,
) -> AttemptRun:
    """One worker process. `kill`: a named checkpoint where it kills itself. `kill_at=(k, s)`: a
    kill from outside, `s` seconds after its k-th event (counting from 0, its "GO"); the worker
    runs in lockstep with this process up to that event, then freely."""
    before = effects.stat().st_size if effects.exists() else 0
    args = [str(journal), str(effects), run_id, "lockstep" if kill_at else kill, backend]
    proc = warm_fork.spawn(WORKER, args, preload=PRELOAD)  # a real process, forked warm: tests/warm_fork.py
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()  # "ready": imports done
    started = time.perf_counter()
    if kill_at is not None:
        k, seconds = kill_at
        for i in range(k + 1):
            if not proc.stdout.readline():  # it finished before its k-th event (a resume: less to do)
                break
            proc.stdin.write("step\n" if i < k else "run\n")
            proc.stdin.flush()
        else:
            try:  # not waiting for anything: the timeout is the chosen moment to kill (unless it ends first)
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    seconds = time.perf_counter() - started
    with open(effects, "a") as f:
        f.write(f"EXIT {proc.returncode}\n")
    assert proc.returncode in (0, KILLED), f"worker failed (exit {proc.returncode}):\n{err}"
    with open(effects, "rb") as f:
        f.seek(before)
        mine = [ln.split() for ln in f.read().decode().splitlines() if not ln.startswith(("ATTEMPT", "EXIT"))]
    go = next((float(ln[-1]) for ln in mine if ln[0] == "GO"), 0.0)
    events = [(float(ln[-1]) - go, " ".join(ln[:2])) for ln in mine]
    return AttemptRun(proc.returncode, seconds, sum(ln[0] == "APPEND" for ln in mine), events)


def event_gaps(r: AttemptRun) -> list[float]:
    """Seconds from each event of a whole run (its "GO" first) to the next; the last: to the exit."""
    times = [t for t, _ in r.events]
    return [b - a for a, b in itertools.pairwise(times)] + [max(r.seconds - times[-1], 0.0)]


def trial(
    directory: Path,
    run_id: str,
    backend: str,
    kills: tuple[str, ...] = (),
    outside: tuple[tuple[int, float], ...] = (),
) -> tuple[list[AttemptRun], dict[str, int]]:
    """Self-kill at each of `kills` in turn, then kill from outside at each of `outside` (see
    `run_attempt`'s `kill_at`), then resume to the end; check the journal. Returns the attempts
    and a summary."""
    journal, effects = directory / "runs.db", directory / f"{run_id}.effects"
    runs = []
    for spec in kills:
        r = run_attempt(journal, effects, run_id, backend, kill=spec)
        assert r.code == KILLED, f"the crash window {spec!r} was not reached (the worker finished)"
        runs.append(r)
    code = KILLED
    for at in outside:
        r = run_attempt(journal, effects, run_id, backend, kill_at=at)
        runs.append(r)
        code = r.code
        if code == 0:
            break
    if code != 0:
        runs.append(run_attempt(journal, effects, run_id, backend))
    return runs, check(journal, effects, run_id)


# --- the check ----------------------------------------------------------------------------------


def read_effects(path: Path) -> list[Attempt]:
    attempts: list[Attempt] = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f[0] == "ATTEMPT":
            attempts.append(Attempt(int(f[1]), float(f[2])))
        elif f[0] == "EXIT":
            attempts[-1].exit = int(f[1])
        else:
            attempts[-1].lines.append(f)
    return attempts


def check(journal_path: Path, effects_path: Path, run_id: str) -> dict[str, int]:
    """Raise AssertionError listing every way the journal and the executions break the contract."""
    attempts = read_effects(effects_path)
    j = SQLiteJournal(journal_path)
    try:
        run = j.load_sync(run_id)
    finally:
        j.close()
    problems = Problems()
    _check(run, attempts, problems)
    problems.raise_if_any()
    state = replay(run)
    n = Counter(r.status for r in state.tool_calls)
    return {
        "attempts": len(attempts),
        "calls": len(state.tool_calls),
        "ok": n["ok"],
        "outcome_unknown": n["outcome_unknown"],
    }


class Problems(list):  # type: ignore[type-arg]
    def __call__(self, ok: Any, message: str) -> None:
        if not ok:
            self.append(message)

    def raise_if_any(self) -> None:
        if self:
            raise AssertionError("durability broken:\n  " + "\n  ".join(self[:12]))


def _check(run: Any, attempts: list[Attempt], p: Problems) -> None:
    p(
        all(a.exit == KILLED for a in attempts[:-1]) and attempts[-1].exit == 0,
        "the last attempt must finish, the others die",
    )
    entries: list[JournalEntry] = run.entries

    def attempt_of(e: JournalEntry) -> int:  # the attempt that wrote it: the last one started before
        return max((i for i, a in enumerate(attempts) if a.t0 <= e.at), default=-1)

    by = {e.seq: attempt_of(e) for e in entries}
    p(all(i >= 0 for i in by.values()), "journal entries older than the first attempt")

    # the end: written exactly once, last, and the run's status says so
    ends = [e for e in entries if e.kind == "end"]
    p(
        len(ends) == 1 and entries[-1].kind == "end",
        f"the run must end with exactly one 'end' entry; kinds: {[e.kind for e in entries][-4:]}",
    )
    p(
        all(e.data == {"stop_reason": "final", "output": FINAL} for e in ends),
        f"'end' entry data {[e.data for e in ends]}",
    )
    p(
        (run.info.status, run.info.steps) == ("final", STEPS + 1),
        f"run status/steps {(run.info.status, run.info.steps)}, want ('final', {STEPS + 1})",
    )

    # model answers: each step once, in order; never requested again once committed
    models = [e for e in entries if e.kind == "model"]
    p(
        [e.step for e in models] == list(range(1, STEPS + 2)),
        f"model entries for steps {[e.step for e in models]}",
    )
    answered = {e.step: e for e in models}
    for i, a in enumerate(attempts):
        for ln in a.lines:
            if ln[0] == "REQ" and int(ln[1]) in answered:
                e = answered[int(ln[1])]
                p(
                    by[e.seq] >= i,
                    f"step {ln[1]} requested again in attempt {i} after its answer was committed in attempt {by[e.seq]}",
                )
    calls: dict[str, tuple[int, str, str]] = {}  # call id -> (step, tool, token)
    for e in models:
        for c in e.data["message"].get("tool_calls") or ():
            calls[c["id"]] = (e.step, c["function"]["name"], _json.loads(c["function"]["arguments"])["token"])

    # tool entries: for a call of the step's answer, after it; starts before the one outcome;
    # the step's outcomes all before the next answer
    starts: dict[str, list[JournalEntry]] = {c: [] for c in calls}
    outcome: dict[str, JournalEntry] = {}
    for e in entries:
        if e.kind not in ("tool_start", "tool_end"):
            continue
        where = calls.get(e.call_id or "")
        if where is None or where[0] != e.step or answered[e.step].seq > e.seq:
            p(
                False,
                f"{e.kind} entry #{e.seq} for call {e.call_id!r} at step {e.step}: not a call of that step's answer",
            )
            continue
        nxt = answered.get(e.step + 1)
        p(nxt is None or e.seq < nxt.seq, f"{e.kind} of {e.call_id} committed after the next step's answer")
        if e.kind == "tool_start":
            p(e.call_id not in outcome, f"{e.call_id} started again after its outcome was committed")
            starts[e.call_id].append(e)  # type: ignore[index]
        else:
            p(e.call_id not in outcome, f"{e.call_id} has two outcomes")
            p(
                e.data.get("name") == where[1],
                f"outcome of {e.call_id} names tool {e.data.get('name')!r}, not {where[1]!r}",
            )
            outcome.setdefault(e.call_id, e)  # type: ignore[arg-type]
    p(set(outcome) == set(calls), f"calls without an outcome: {sorted(set(calls) - set(outcome))}")

    # executions: only of journaled calls, each after its start was committed and before its
    # outcome was, at most once per attempt; the outcome a tool returned is committed at once
    execs: dict[str, list[int]] = {c: [] for c in calls}
    for i, a in enumerate(attempts):
        lines = a.lines
        for k, ln in enumerate(lines):
            if ln[0] == "EXEC":
                cid, n_start, n_end, in_model = ln[1], int(ln[2]), int(ln[3]), int(ln[4])
                p(cid in calls, f"attempt {i}: a tool ran for {cid}, a call that is not in the journal")
                p(in_model == 1, f"attempt {i}: {cid} ran before the answer that asked for it was committed")
                p(n_start >= 1, f"attempt {i}: {cid} ran before its tool_start was committed")
                p(n_end == 0, f"attempt {i}: {cid} ran although its outcome was already committed")
                if cid in calls:
                    p(
                        any(by[s.seq] == i for s in starts[cid]),
                        f"attempt {i}: {cid} ran without a tool_start of this attempt",
                    )
                    p(i not in execs[cid], f"attempt {i}: {cid} ran twice")
                    execs[cid].append(i)
            elif ln[0] == "RET":
                later = any(x[:2] == ["APPEND", "tool_end"] and x[3] == ln[1] for x in lines[k + 1 :])
                cut = a.outside_kill and k == len(lines) - 1  # killed between the return and the commit
                # or killed while a sibling call's outcome was being committed: outcomes of one
                # step commit one at a time, so the sibling's commit may come first; nothing but
                # those commits happened between this return and the kill
                rest = lines[k + 1 :]
                cut = cut or (
                    bool(rest)
                    and rest[-1][0] == "KILL"
                    and all(x[:2] == ["APPEND", "tool_end"] and x[3] != ln[1] for x in rest[:-1])
                )
                p(
                    later or cut,
                    f"attempt {i}: {ln[1]} returned but its outcome was not committed before the process went on (lost when it dies)",
                )

    # outcomes: ok from a run in the same attempt; outcome_unknown only for a non-idempotent
    # call started in an earlier attempt that died, and then not run again
    for cid, (_step, tool, token) in calls.items():
        e = outcome.get(cid)
        if e is None:
            continue
        a_end, s = by[e.seq], sorted(by[x.seq] for x in starts[cid])
        status = e.data.get("status")
        if status == "ok":
            p(
                e.data.get("content") == f"{'wrote' if tool == 'write' else 'read'} {token}",
                f"{cid}: content {e.data.get('content')!r}",
            )
            p(
                bool(s) and s[-1] == a_end and a_end in execs[cid],
                f"{cid} ({tool}) ok in attempt {a_end} without running there (starts in {s}, runs in {execs[cid]})",
            )
            if tool == "write":
                p(
                    len(s) == 1 and len(execs[cid]) == 1,
                    f"non-idempotent {cid} started in attempts {s}, ran in {execs[cid]}",
                )
        elif status == "outcome_unknown":
            p(tool == "write", f"idempotent {cid} reported outcome_unknown instead of being run again")
            p(
                bool(s) and s[-1] < a_end,
                f"{cid} reported outcome_unknown in attempt {a_end} but its start was never journaled before (starts in {s}): a lost execution",
            )
            p(a_end not in execs[cid], f"{cid} reported outcome_unknown and run")
            p(
                not s or attempts[s[-1]].exit == KILLED,
                f"{cid}: its attempt did not die, yet its outcome is unknown",
            )
        else:
            p(False, f"{cid}: unexpected status {status!r}")

    # a self-kill landed where it says: before / mid-commit nothing committed, after: committed
    for i, a in enumerate(attempts):
        k = a.kill
        if k is None or not k[1].startswith("append."):
            continue
        phase, kind = k[1].split(".")[1:3]
        cid = None if k[3] == "-" else k[3]
        mine = [
            e
            for e in entries
            if by[e.seq] == i and e.kind == kind and e.step == int(k[2]) and e.call_id == cid
        ]
        if phase == "after":
            p(
                len(mine) == 1 and mine[0] is [e for e in entries if by[e.seq] == i][-1],
                f"attempt {i} died right after committing {k[1:]}, which is not its last entry",
            )
        else:
            p(not mine, f"attempt {i} died {phase} committing {k[1:]}, yet the entry is in the journal")

    # the conversation rebuilt from the journal
    state = replay(run)
    p(state.final == ("final", FINAL) and state.ended, f"replay: final={state.final} ended={state.ended}")
    msgs = state.messages
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            p(
                [x.get("tool_call_id") for x in msgs[i + 1 : i + 1 + len(ids)]] == ids,
                f"tool messages after step message {i} out of order",
            )
    p(len(state.tool_calls) == len(calls), f"{len(state.tool_calls)} records for {len(calls)} calls")


def kill_points() -> list[str]:
    """Every named checkpoint of the worker (without step / occurrence)."""
    points = ["model.request"]
    for phase in ("before", "commit", "after"):
        points += [f"append.{phase}.model", f"append.{phase}.end"]
        points += [f"append.{phase}.{k}.{t}" for k in ("tool_start", "tool_end") for t in ("write", "read")]
    return points + [f"tool.{w}.{t}" for w in ("before", "after") for t in ("write", "read")]


def env_backend(i: int) -> str:
    return os.environ.get("CRASH_BACKEND") or ("trio" if i % 2 else "asyncio")
