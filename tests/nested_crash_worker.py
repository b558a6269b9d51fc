"""Subprocess of tests/test_nested_crash.py: a journaled outer run whose agent tool runs an inner
agent; it may SIGKILL itself at a journal write, and is then resumed by a new process.

    python tests/nested_crash_worker.py JOURNAL RUN_ID KILL BACKEND RESULT

KILL is "-" or `KIND@WHO#N`: kill right after the N-th committed journal entry of KIND ("model",
"tool_end", "end") written by WHO ("outer" or "inner"). The outer model calls the agent tool
`helper` twice in one step (two inner runs, concurrently), then answers; each inner run calls
its `read` tool, then answers. Every model answer reports 10 prompt + 5 completion tokens. On
success RESULT gets the run's `usage` as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import anyio

from agentloop import Agent, RunNotFoundError, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

journal_path, run_id, kill, backend, result_path = sys.argv[1:6]
KIND, _, rest = kill.partition("@")
WHO, _, NTH = rest.partition("#")
_hits = 0


class CrashJournal(SQLiteJournal):
    async def append(self, rid: str, kind: str, data: dict[str, Any], **kw: Any) -> None:
        global _hits
        await super().append(rid, kind, data, **kw)
        who = "outer" if rid == run_id else "inner"
        if kind == KIND and who == WHO:
            _hits += 1
            if _hits == int(NTH or 1):
                os.kill(os.getpid(), signal.SIGKILL)


def answer(request: Any) -> Any:
    outer = request.run_id == run_id
    last = request.messages[-1]
    if outer:
        if last["role"] == "user":
            return tool_calls(
                call("helper", {"input": "a"}, id="ha"), call("helper", {"input": "b"}, id="hb")
            )
        return text("outer done")
    if last["role"] == "user":
        return tool_calls(call("read", {"key": last["content"]}, id="rd"))
    return text(f"inner read {last['content']}")


async def main() -> None:
    journal = CrashJournal(journal_path)
    model = ScriptedModel(answer)
    inner_tools = ToolRegistry()

    @inner_tools.tool(idempotent=True)
    async def read(key: str) -> str:
        return f"value {key}"

    helper = Agent(client=model, tools=inner_tools, name="helper")
    tools = ToolRegistry()
    tools.register(helper.as_tool())
    outer = Agent(client=model, tools=tools, journal=journal)
    try:
        result = await outer.resume(run_id)
    except RunNotFoundError:
        result = await outer.run("go", run_id=run_id)
    assert result.output == "outer done", result.output
    usage = {"requests": result.usage.requests, "total_tokens": result.usage.total_tokens}
    await anyio.Path(result_path).write_text(json.dumps(usage))
    journal.close()


anyio.run(main, backend=backend)
