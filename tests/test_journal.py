"""Durable runs with SQLiteJournal: what is committed, replay, resume semantics, leases, bad files, CLI."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from helpers import runs_main

from agentloop import (
    Agent,
    APIError,
    JournalCorruptError,
    JournalError,
    ResumeError,
    RunLockedError,
    RunNotFoundError,
    SQLiteJournal,
    ToolRegistry,
)
from agentloop.abc import replay
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def make_tools() -> tuple[ToolRegistry, list[str]]:
    tools = ToolRegistry()
    ran: list[str] = []

    @tools.tool
    async def charge(order: str) -> str:
        """Charge an order (not idempotent)."""
        ran.append(f"charge {order}")
        return f"charged {order}"

    @tools.tool(idempotent=True)
    async def fetch(order: str) -> str:
        """Fetch an order (idempotent)."""
        ran.append(f"fetch {order}")
        return f"order {order}"

    @tools.tool(requires_approval=True)
    async def refund(order: str) -> str:
        """Refund an order."""
        ran.append(f"refund {order}")
        return "refunded"

    return tools, ran


@pytest.fixture
def journal(tmp_path: Path) -> SQLiteJournal:
    j = SQLiteJournal(tmp_path / "runs.db")
    yield j
    j.close()


async def test_every_step_is_committed(journal: SQLiteJournal) -> None:
    tools, _ = make_tools()
    model = ScriptedModel([tool_calls(call("fetch", {"order": "1"}, id="f1")), text("done")])
    result = await Agent(client=model, tools=tools, journal=journal).run("go", run_id="run_a")
    assert result.output == "done"
    run = await journal.load("run_a")
    assert [e.kind for e in run.entries] == ["model", "tool_start", "tool_end", "model", "end"]
    assert run.info.status == "final" and run.info.steps == 2
    assert run.header["messages"] == [{"role": "user", "content": "go"}]
    state = replay(run)
    assert state.messages == result.messages and state.final == ("final", "done")
    assert [r.run_id for r in await journal.list_runs()] == ["run_a"]
    with pytest.raises(JournalError, match="already in journal"):
        await Agent(client=model, tools=tools, journal=journal).run("again", run_id="run_a")


class Boom(APIError):
    pass


async def test_resume_after_failure_does_not_request_or_run_again(journal: SQLiteJournal) -> None:
    tools, ran = make_tools()

    def first(request):  # two steps, then the "process dies" (the endpoint fails)
        if request.step == 1:
            return tool_calls(call("charge", {"order": "1"}, id="c1"))
        if request.step == 2:
            return tool_calls(call("fetch", {"order": "1"}, id="f1"))
        raise Boom("gone")

    with pytest.raises(Boom):
        await Agent(client=ScriptedModel(first), tools=tools, journal=journal).run("go", run_id="r")
    assert ran == ["charge 1", "fetch 1"]
    model = ScriptedModel([text("all done")])
    result = await Agent(client=model, tools=tools, journal=journal).resume("r")
    assert result.output == "all done" and ran == ["charge 1", "fetch 1"]
    assert len(model.requests) == 1 and result.steps == 3
    assert [m.get("tool_call_id") for m in model.requests[0]["messages"] if m["role"] == "tool"] == [
        "c1",
        "f1",
    ]
    again = await Agent(client=ScriptedModel([]), tools=tools, journal=journal).resume(
        "r"
    )  # finished: as it is
    assert again.output == "all done" and again.messages == result.messages


async def test_started_but_unfinished_calls(journal: SQLiteJournal) -> None:
    """A crash while tools ran: idempotent ones run again, others get 'outcome unknown', unstarted ones run."""
    tools, ran = make_tools()
    token = await journal.create("r", {"model": "flux-auto", "messages": [{"role": "user", "content": "go"}]})
    calls = [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": '{"order": "7"}'}}
        for cid, name in (("c1", "charge"), ("f1", "fetch"), ("c2", "charge"), ("f2", "fetch"))
    ]
    usage = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    await journal.append(
        "r",
        "model",
        {"message": {"role": "assistant", "content": None, "tool_calls": calls}, "usage": usage},
        step=1,
    )
    for cid in ("c1", "f1", "f2"):
        await journal.append("r", "tool_start", {"name": "x", "arguments": "{}"}, step=1, call_id=cid)
    done = {
        "name": "fetch",
        "arguments": {"order": "7"},
        "status": "ok",
        "content": "order 7",
        "duration_s": 0.0,
        "error": None,
        "raw_arguments": "{}",
    }
    await journal.append("r", "tool_end", done, step=1, call_id="f2")
    await journal.release("r", token)  # as if the process had died

    model = ScriptedModel([text("ok")])
    result = await Agent(client=model, tools=tools, journal=journal).resume("r")
    by_id = {r.id: r for r in result.tool_calls}
    assert by_id["c1"].status == "outcome_unknown" and "not run again" in by_id["c1"].content
    assert by_id["f1"].status == "ok"  # idempotent: run again
    assert by_id["c2"].status == "ok"  # never started: run
    assert by_id["f2"].content == "order 7"  # finished: from the journal
    assert sorted(ran) == ["charge 7", "fetch 7"]
    assert [m["tool_call_id"] for m in result.messages if m["role"] == "tool"] == ["c1", "f1", "c2", "f2"]


async def test_two_resumers_cannot_both_proceed(journal: SQLiteJournal, tmp_path: Path) -> None:
    tools = ToolRegistry()
    entered, release = anyio.Event(), anyio.Event()

    @tools.tool
    async def slow() -> str:
        """Wait."""
        entered.set()
        await release.wait()
        return "ok"

    model = ScriptedModel([tool_calls(call("slow", id="s1")), text("done")])
    agent = Agent(client=model, tools=tools, journal=journal)
    other = SQLiteJournal(tmp_path / "runs.db")  # another connection to the same file
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: agent.run("go", run_id="r"))
            await entered.wait()
            with pytest.raises(RunLockedError, match="two cannot continue one run at once"):
                await Agent(client=model, tools=tools, journal=other).resume("r")
            with pytest.raises(RunLockedError):
                await other.delete("r")
            release.set()
        assert (await other.load("r")).info.status == "final"
    finally:
        other.close()


async def test_lease_of_a_dead_process_is_taken_over(journal: SQLiteJournal, tmp_path: Path) -> None:
    tools, _ = make_tools()
    await journal.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("UPDATE agentloop_leases SET pid=?, token='other'", (int(dead.stdout),))
    fresh = SQLiteJournal(tmp_path / "runs.db")
    try:
        result = await Agent(client=ScriptedModel([text("hi")]), tools=tools, journal=fresh).resume("r")
    finally:
        fresh.close()
    assert result.output == "hi"


async def test_approval_pause_survives_in_the_journal(journal: SQLiteJournal) -> None:
    tools, ran = make_tools()
    model = ScriptedModel(
        [
            tool_calls(call("fetch", {"order": "1"}, id="f"), call("refund", {"order": "1"}, id="r1")),
            text("refunded"),
        ]
    )
    paused = await Agent(client=model, tools=tools, journal=journal).run("refund 1", run_id="p")
    assert paused.stop_reason == "approval_required" and (await journal.load("p")).info.status == "paused"
    agent2 = Agent(client=model, tools=tools, journal=journal)
    with pytest.raises(ResumeError, match="missing"):
        await agent2.resume("p")
    result = await agent2.resume("p", approvals={"r1": True})
    assert result.output == "refunded" and ran == ["fetch 1", "refund 1"]


async def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello, not a database\n" * 10)
    with pytest.raises(JournalCorruptError, match="not a SQLite database"):
        await SQLiteJournal(text_file).list_runs()
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(JournalCorruptError, match=r"not an agentloop journal.*users"):
        await SQLiteJournal(foreign).list_runs()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    with pytest.raises(JournalCorruptError):
        await SQLiteJournal(damaged).list_runs()
    j = SQLiteJournal(tmp_path / "ok.db")
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        await j.load("nope")
    with pytest.raises(RunNotFoundError):
        await Agent(client=ScriptedModel([]), journal=j).resume("nope")
    j.close()


async def test_delete_and_cli(journal: SQLiteJournal, tmp_path: Path) -> None:
    tools, _ = make_tools()
    model = ScriptedModel([tool_calls(call("fetch", {"order": "9"}, id="f9")), text("Order 9 is fine.")])
    await Agent(client=model, tools=tools, journal=journal).run("check order 9", run_id="cli_run")
    path = str(tmp_path / "runs.db")
    out, err = io.StringIO(), io.StringIO()
    assert runs_main(["--journal", path, "list"], out=out, err=err) == 0
    assert "cli_run" in out.getvalue() and "final" in out.getvalue()
    out = io.StringIO()
    assert runs_main(["--journal", path, "show", "cli_run"], out=out, err=err) == 0
    shown = out.getvalue()
    for piece in (
        "[user] check order 9",
        "-> fetch(",
        "[tool fetch id=f9] ok: order 9",
        "Order 9 is fine.",
        "finished: final",
    ):
        assert piece in shown, shown
    assert (
        runs_main(["--journal", path, "show", "nope"], out=out, err=err) == 1
        and "no run 'nope'" in err.getvalue()
    )
    assert runs_main(["--journal", path, "delete", "cli_run"], out=out, err=err) == 0
    assert await journal.list_runs() == []
    assert runs_main(["--journal", str(tmp_path / "missing.db"), "list"], out=out, err=err) == 1


async def test_final_answer_committed_but_not_its_end(journal: SQLiteJournal) -> None:
    """A crash between the final answer's commit and the 'end' entry: resume returns it, asks nothing."""
    token = await journal.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
    usage = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    await journal.append(
        "r", "model", {"message": {"role": "assistant", "content": "the end"}, "usage": usage}, step=1
    )
    await journal.release("r", token)
    model = ScriptedModel([])
    result = await Agent(client=model, journal=journal, max_steps=1).resume("r")
    assert result.output == "the end" and result.stop_reason == "final" and model.requests == []
    assert (await journal.load("r")).info.status == "final"
