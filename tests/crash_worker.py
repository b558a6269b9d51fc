"""Subprocess of the crash tests: runs (or resumes) one durable multi-step run and may die.

    python tests/crash_worker.py JOURNAL EFFECTS RUN_ID KILL BACKEND

KILL is "-" (no self-kill), "lockstep" (the parent kills it from outside: after each effects
line below the worker waits for the parent's "step" or "run", so the parent can kill it at a
chosen moment after a chosen event), or a
named checkpoint, `POINT[@STEP][#N]`: SIGKILL itself at the N-th (default 1st) hit of POINT in
step STEP (default any step). POINT matches a checkpoint name or a dotted prefix of one:

  model.request                      the model is being asked (nothing of the answer committed)
  append.before.KIND[.TOOL]          a journal write is about to start
  append.commit.KIND[.TOOL]          mid-commit: the statements ran, COMMIT has not
  append.after.KIND[.TOOL]           committed; nothing else happened since
  tool.before.TOOL / tool.after.TOOL before / right after the tool's side effect

KIND is model, tool_start, tool_end or end; TOOL is write (not idempotent) or read (idempotent).
The run: STEPS steps of 2-3 concurrent calls, then the final answer (step STEPS + 1).

The effects file gets one line per event, each ending with its time.time() (the journal's
clock), appended with O_APPEND (the parent adds `EXIT <code>` after each attempt);
`crash_harness.check` compares it with the journal:

  ATTEMPT <pid>                      this process started
  GO                                 the event loop runs, the journal is open: the run starts
  REQ <step>                         the model was asked for <step>
  APPEND <kind> <step> <call_id|->   the loop started a journal write
  EXEC <call_id> <starts> <ends> <in_model>
                                     the side effect of a call, with what the journal held at
                                     that moment: its tool_start / tool_end entries, and whether
                                     the model answer that asked for it was committed
  RET <call_id>                      the tool returns its result
  KILL <point> <step> <call_id|->    the process kills itself now
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel

from agentloop import Agent, RunNotFoundError, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

STEPS = 5
FINAL = "all steps done"
journal_path, effects_path, run_id, kill_spec, backend = sys.argv[1:6]
_fd = os.open(effects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


_lockstep = False  # from "GO" on, with KILL "lockstep"


# Every line is written under this lock, and a self-kill writes its KILL line and dies holding it:
# the journal's worker thread kills the process while the event loop's thread runs on, and a line
# that thread wrote after the KILL line (a tool's RET, say) would be a moment the process never
# lived past in the harness's reading of the file (it did, for microseconds, before the signal).
_write_lock = threading.Lock()


def note(*fields: Any) -> None:
    global _lockstep
    line = " ".join(str(f) for f in fields) + f" {time.time():.6f}\n"
    with _write_lock:
        os.write(_fd, line.encode())
    if _lockstep:  # the parent picks the event after which it kills: it says when to run freely
        sys.stdout.write(line)
        sys.stdout.flush()
        _lockstep = sys.stdin.readline().strip() == "step"


def _parse(spec: str) -> tuple[str, int | None, int]:
    if spec in ("-", "lockstep"):
        return "", None, 0
    spec, _, nth = spec.partition("#")
    point, _, step = spec.partition("@")
    return point, int(step) if step else None, int(nth or 1)


KILL_POINT, KILL_STEP, KILL_NTH = _parse(kill_spec)
_hits = 0


def checkpoint(name: str, step: int, call_id: str | None = None) -> None:
    global _hits
    if not KILL_POINT or not (name == KILL_POINT or name.startswith(KILL_POINT + ".")):
        return
    if KILL_STEP is not None and step != KILL_STEP:
        return
    _hits += 1
    if _hits == KILL_NTH:
        line = f"KILL {name} {step} {call_id or '-'} {time.time():.6f}\n"
        _write_lock.acquire()  # never released: no line follows this one (see _write_lock)
        os.write(_fd, line.encode())
        os.kill(os.getpid(), signal.SIGKILL)


_steps: dict[str, int] = {}  # call id -> step, for checkpoints inside tools
_tool_of: dict[str, str] = {}  # call id -> tool name
_reader: sqlite3.Connection | None = None


def journal_view(call_id: str) -> tuple[int, int, int]:
    """What the journal holds for a call, read through a separate read-only connection."""
    global _reader
    if _reader is None:
        _reader = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, isolation_level=None)
    kinds = [
        k
        for (k,) in _reader.execute(
            "SELECT kind FROM agentloop_entries WHERE run_id=? AND call_id=?", (run_id, call_id)
        )
    ]
    (in_model,) = _reader.execute(
        "SELECT COUNT(*) FROM agentloop_entries WHERE run_id=? AND kind='model' AND instr(data, ?) > 0",
        (run_id, f'"id":"{call_id}"'),
    ).fetchone()
    return kinds.count("tool_start"), kinds.count("tool_end"), in_model


class CrashJournal(SQLiteJournal):
    async def append(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        step: int = 0,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        note("APPEND", kind, step, call_id or "-")
        await super().append(run_id, kind, data, step=step, call_id=call_id, status=status)

    def _append(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        kind: str,
        data: bytes,
        step: int,
        call_id: Any,
        status: Any,
    ) -> None:
        name = kind if call_id is None else f"{kind}.{_tool_of.get(call_id, 'unknown')}"
        self._current = (name, step, call_id)
        checkpoint(f"append.before.{name}", step, call_id)
        super()._append(conn, run_id, kind, data, step, call_id, status)
        checkpoint(f"append.after.{name}", step, call_id)

    def _commit(self, conn: sqlite3.Connection) -> None:
        name, step, call_id = self._current
        checkpoint(f"append.commit.{name}", step, call_id)
        super()._commit(conn)


tools = ToolRegistry()


async def _effect(name: str, token: str, result: str) -> str:
    cid = f"c{token}"
    step = _steps.get(cid, 0)
    checkpoint(f"tool.before.{name}", step, cid)
    await anyio.lowlevel.checkpoint()
    note("EXEC", cid, *journal_view(cid))
    checkpoint(f"tool.after.{name}", step, cid)
    await anyio.lowlevel.checkpoint()
    note("RET", cid)
    return result


@tools.tool
async def write(token: str) -> str:
    """Not idempotent: a side effect that must happen at most once."""
    return await _effect("write", token, f"wrote {token}")


@tools.tool(idempotent=True)
async def read(token: str) -> str:
    """Idempotent: may run again after a crash interrupted it."""
    return await _effect("read", token, f"read {token}")


def answer(request: Any) -> Any:
    note("REQ", request.step)
    checkpoint("model.request", request.step)
    if request.step > STEPS:
        return text(FINAL)
    names = ["write", "read"] + (["write"] if request.step % 2 else [])
    return tool_calls(
        *(call(n, {"token": t}, id=f"c{t}") for n, t in ((n, secrets.token_hex(6)) for n in names))
    )


def learn_calls(journal: SQLiteJournal) -> None:
    """Steps and tools of the calls journaled so far (the tools of a resumed step need them)."""
    try:
        run = journal.load_sync(run_id)
    except RunNotFoundError:
        return
    for e in run.entries:
        if e.kind == "model":
            for c in e.data["message"].get("tool_calls") or ():
                _steps[c["id"]], _tool_of[c["id"]] = e.step, c["function"]["name"]


class Model(ScriptedModel):
    async def request(self, request: Any, emit: Any = None) -> Any:
        turn = await super().request(request, emit)
        for c in turn.message.get("tool_calls") or ():
            _steps[c["id"]], _tool_of[c["id"]] = request.step, c["function"]["name"]
        return turn


async def main() -> None:
    journal = CrashJournal(journal_path)
    learn_calls(journal)
    agent = Agent(client=Model(answer), tools=tools, journal=journal, max_steps=STEPS + 1)
    global _lockstep
    _lockstep = kill_spec == "lockstep"
    note("GO")
    try:
        result = await agent.resume(run_id)
    except RunNotFoundError:
        result = await agent.run("do the steps", run_id=run_id)
    assert result.stop_reason == "final" and result.output == FINAL, (result.stop_reason, result.output)
    journal.close()


note("ATTEMPT", os.getpid())
print("ready", flush=True)
anyio.run(main, backend=backend)
