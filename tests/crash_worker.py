"""Subprocess of tests/test_crash_resume.py: runs (or resumes) one durable multi-step run and may die.

    python tests/crash_worker.py JOURNAL SIDE_EFFECTS RUN_ID KILL_AT BACKEND

KILL_AT > 0: SIGKILL itself at that checkpoint (in a model request, before / during / after a
tool's side effect, before a journal write, mid-commit, right after a commit). KILL_AT = 0: no
self-kill (the parent may kill it from outside at a random moment after "ready").

The side-effect file gets one line per event, appended with O_APPEND:
  REQ <step>    the model was asked for step <step>
  RESP <step>   the model answer of <step> was committed to the journal
  EXEC <token>  a tool ran (its side effect) for the call whose arguments carry <token>
  DONE <token>  the outcome of that call was committed to the journal
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import sys
from typing import Any

import anyio

from agentloop import Agent, ToolRegistry
from agentloop import _json
from agentloop._exceptions import RunNotFoundError
from agentloop._journal import SQLiteJournal
from agentloop.testing import ScriptedModel, call, text, tool_calls

STEPS = 5
journal_path, effects_path, run_id, kill_at, backend = sys.argv[1:6]
KILL_AT = int(kill_at)
_hits = 0
_fd = os.open(effects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def note(line: str) -> None:
    os.write(_fd, (line + "\n").encode())


def checkpoint() -> None:
    global _hits
    _hits += 1
    if _hits == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


class CrashJournal(SQLiteJournal):
    def _append(self, conn: sqlite3.Connection, run_id: str, kind: str, data: bytes, step: int, call_id: Any, status: Any) -> None:
        checkpoint()  # before the write
        super()._append(conn, run_id, kind, data, step, call_id, status)
        checkpoint()  # committed, marker not yet written
        if kind == "model":
            note(f"RESP {step}")
        elif kind == "tool_end":
            args = _json.loads(data)["arguments"] or {}
            note(f"DONE {args.get('token')}")

    def _commit(self, conn: sqlite3.Connection) -> None:
        checkpoint()  # mid-commit: the statements ran, the transaction is not committed
        super()._commit(conn)


tools = ToolRegistry()


@tools.tool
async def write(token: str) -> str:
    """Not idempotent: a side effect that must happen at most once."""
    checkpoint()
    await anyio.sleep(0)
    note(f"EXEC {token}")
    checkpoint()
    await anyio.sleep(0)
    return f"wrote {token}"


@tools.tool(idempotent=True)
async def read(token: str) -> str:
    """Idempotent: may run again after a crash interrupted it."""
    checkpoint()
    note(f"EXEC {token}")
    checkpoint()
    return f"read {token}"


def answer(request: Any) -> Any:
    note(f"REQ {request.step}")
    checkpoint()
    if request.step > STEPS:
        return text("all steps done")
    names = ["write", "read"] + (["write"] if request.step % 2 else [])
    calls = []
    for name in names:
        token = secrets.token_hex(6)
        calls.append(call(name, {"token": token}, id=f"c{token}"))
    return tool_calls(*calls)


async def main() -> None:
    journal = CrashJournal(journal_path)
    agent = Agent(client=ScriptedModel(answer), tools=tools, journal=journal, max_steps=STEPS + 1)
    try:
        result = await agent.resume(run_id)
    except RunNotFoundError:
        result = await agent.run("do the steps", run_id=run_id)
    assert result.stop_reason == "final", result.stop_reason
    journal.close()


print("ready", flush=True)
anyio.run(main, backend=backend)
