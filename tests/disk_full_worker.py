"""Subprocess of tests/test_journal_errors.py: a durable run whose disk fills up mid-run, for real.

    unshare -m --propagation private python tests/disk_full_worker.py MOUNT_DIR BACKEND

In its own mount namespace (so nothing outside sees it, and it vanishes with the process) it
mounts a 1 MiB tmpfs on MOUNT_DIR and journals a run there. The run's first tool fills the disk
(as another process would) and returns a large result, so committing its outcome hits ENOSPC.
Then it checks what issue #15 asks, and prints one JSON line with what it saw:
the error, whether the journal still loads, and whether this same process (same journal
object) can resume the run once space is freed; then, with the file system remounted read-only,
what a new run raises (an I/O error that is not a full disk).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio

from agentloop import Agent, AgentloopError, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

mount_dir, backend = sys.argv[1:3]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount_dir], check=True)
FILLER = os.path.join(mount_dir, "filler")
fills = 0

tools = ToolRegistry()


@tools.tool(idempotent=True)
def fetch(order: str) -> str:
    """Fetch an order (the first call fills the disk, as a neighbour process would)."""
    global fills
    if fills == 0:
        fills += 1
        with open(FILLER, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
    return f"order {order}: " + "x" * 200_000  # its journaled outcome needs space the disk no longer has


async def main() -> dict:
    journal = SQLiteJournal(os.path.join(mount_dir, "runs.db"))
    script = [tool_calls(call("fetch", {"order": "7"}, id="c1")), text("done")]
    agent = Agent(client=ScriptedModel(script), tools=tools, journal=journal)
    seen: dict = {}
    try:
        await agent.run("hi", run_id="r1")
        seen["first"] = "finished"
    except AgentloopError as e:
        seen["first"] = type(e).__name__
        seen["message"] = str(e)
        seen["is_journal_write_error"] = type(e).__name__ == "JournalWriteError"
    except Exception as e:  # the point is to see it
        seen["first"] = "RAW " + type(e).__name__
        seen["message"] = str(e)
    try:
        run = journal.load_sync("r1")  # on the full disk still
        seen["entries"] = [e.kind for e in run.entries]
    except AgentloopError as e:
        seen["entries"] = f"{type(e).__name__}: {e}"
    os.remove(FILLER)
    agent2 = Agent(client=ScriptedModel([text("done")]), tools=tools, journal=journal)
    try:
        seen["resumed"] = (await agent2.resume("r1")).output
    except AgentloopError as e:
        seen["resumed"] = f"{type(e).__name__}: {e}"
    journal.close()
    # The other kind of write failure: an I/O error (here a read-only file system).
    await anyio.run_process(["mount", "-o", "remount,ro", mount_dir])
    try:
        await Agent(client=ScriptedModel([text("done")]), tools=tools, journal=journal).run("hi", run_id="r2")
        seen["read_only"] = "finished"
    except AgentloopError as e:
        seen["read_only"] = f"{type(e).__name__}: {e}"
    journal.close()
    return seen


print(json.dumps(anyio.run(main, backend=backend)))
