"""A huge journal entry is not parsed to show a run's page, nor to make a decision.

Regression: `agentloop ui` json-loaded every entry of a page whole, so one 32 MiB tool result
cost 32 MiB of text plus its parsed form on every page view and every live update, though the
page shows 64 KiB of it. `SQLiteJournal.read_window(max_entry_bytes=...)` now returns such an
entry as its size and first 64 KiB (cut by SQLite), and the page shows that summary. What a
paused run's pending calls are read from (`paused`, `approvals`) is never clipped.
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, RunLimits, SQLiteJournal, ToolRegistry
from agentloop.abc import Entry
from agentloop.testing import ScriptedModel, call, text, tool_calls
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio
BIG = 32 * 1024 * 1024


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    async def fetch(url: str) -> str:
        """Fetch."""
        return f"page of {url}"

    @registry.tool(requires_approval=True)
    async def refund(amount: int) -> str:
        """Refund."""
        return f"refunded {amount}"

    return registry


async def run(path: str, *, pause: bool) -> None:
    script = [
        tool_calls(call("fetch", {"url": "a"}, id="f1")),
        tool_calls(call("fetch", {"url": "b"}, id="f2")),
    ]
    if pause:
        script.append(
            tool_calls(call("refund", {"amount": 5}, id="r1"), call("refund", {"amount": 6}, id="r2"))
        )
    script.append(text("done"))
    journal = SQLiteJournal(path)
    agent = Agent(
        client=ScriptedModel(script), tools=tools(), journal=journal, limits=RunLimits(loop_threshold=None)
    )
    result = await agent.run("go", run_id="r")
    journal.close()
    assert result.stop_reason == ("approval_required" if pause else "final")


def enlarge(path: str, call_id: str, size: int = BIG) -> None:
    """Make one call's journaled result `size` characters long (a tool that returned that much)."""
    with sqlite3.connect(path) as db:
        (data,) = db.execute(
            "SELECT data FROM agentloop_entries WHERE run_id='r' AND kind=? AND call_id=?",
            (Entry.TOOL_END, call_id),
        ).fetchone()
        value = json.loads(data)
        value["content"] = "<b>" + "x" * size  # markup in the head: shown as text
        db.execute(
            "UPDATE agentloop_entries SET data=? WHERE run_id='r' AND kind=? AND call_id=?",
            (json.dumps(value).encode(), Entry.TOOL_END, call_id),
        )


@asynccontextmanager
async def client(path: str, **options: int) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(path, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            c.headers["x-csrf"] = app.state.inspector.csrf  # read by `decide` below
            yield c


async def decide(c: httpx.AsyncClient, call_id: str) -> int:
    form = {"call_id": call_id, "decision": "approve", "csrf": c.headers["x-csrf"]}
    return (await c.post("/decide/r", data=form)).status_code


async def peak_of(c: httpx.AsyncClient, url: str) -> tuple[httpx.Response, int]:
    tracemalloc.start()
    try:
        r = await c.get(url)
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_32_mib_tool_result_is_shown_clipped_with_bounded_memory(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await run(path, pause=False)
    async with client(path) as c:
        # first-call costs (templates, imports) out of the measure, before the result is made big
        # (a request over the 32 MiB entry costs ~0.5 s of CPU in SQLite; the app caches no page)
        await c.get("/runs/r")
        enlarge(path, "f1")
        r, peak = await peak_of(c, "/runs/r")
        live, live_peak = await peak_of(c, "/runs/r?partial=1")
    assert r.status_code == 200 and live.status_code == 200
    # the whole entry read and parsed costs > 64 MiB; the page is bounded by its 2 MiB of text
    assert peak < BIG // 4 and live_peak < BIG // 4, (peak, live_peak)
    page = r.text
    assert "too large to read whole here" in page
    assert "&lt;b&gt;xxxx" in page and "<b>xxxx" not in page  # the raw head, escaped
    assert page.count("x" * 1024) <= 64 * 2  # at most the 64 KiB head, in the call and the chat
    assert "page of b" in page and "done" in page  # the other entries, whole
    assert "final" in page


async def test_a_huge_entry_in_a_paused_runs_tail_still_lets_decisions_be_made(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await run(path, pause=True)
    enlarge(path, "f2")  # inside the tail a decision reads
    async with client(path) as c:
        page, peak = await peak_of(c, "/runs/r")
        assert peak < BIG // 4, peak
        assert "too large to read whole here" in page.text
        assert "r1" in page.text and "r2" in page.text and 'name="call_id"' in page.text
        tracemalloc.start()
        try:
            assert await decide(c, "r1") == 303
            decide_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert decide_peak < BIG // 4, decide_peak
        assert await decide(c, "nope") == 409  # still knows what is pending
        assert await decide(c, "r2") == 303
        assert "decided: approved" in (await c.get("/runs/r")).text
    journal = SQLiteJournal(path)
    agent = Agent(client=ScriptedModel([text("refunded both")]), tools=tools(), journal=journal)
    result = await agent.resume("r")
    journal.close()
    assert result.output == "refunded both"
    assert sorted(t.content for t in result.tool_calls if t.name == "refund") == ["refunded 5", "refunded 6"]


async def test_a_paused_entry_over_the_bound_is_read_whole(tmp_path: Path) -> None:
    """The pending calls come from the `paused` entry: clipping it would lose them."""
    path = str(tmp_path / "j.db")
    await run(path, pause=True)
    async with client(path, max_entry_bytes=16) as c:  # every other entry is clipped
        page = (await c.get("/runs/r")).text
        assert page.count('name="call_id"') >= 2 and "refund" in page
        assert await decide(c, "r1") == 303
        assert "decided: approved" in (await c.get("/runs/r")).text


def test_max_entry_bytes_is_checked() -> None:
    with pytest.raises(ValueError, match="max_entry_bytes"):
        create_app("unused.db", max_entry_bytes=-1)


def stored_size(path: str, seq: int) -> tuple[int, bytes]:
    with sqlite3.connect(path) as db:
        (data,) = db.execute(
            "SELECT data FROM agentloop_entries WHERE run_id='r' AND seq=?", (seq,)
        ).fetchone()
    raw = data if isinstance(data, bytes) else data.encode()
    return len(raw), raw


@settings(
    max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.text(min_size=0, max_size=300), offset=st.sampled_from([-1, 0, 1]))
def test_entries_around_the_bound_are_whole_or_clipped_never_broken(
    tmp_path_factory: pytest.TempPathFactory, content: str, offset: int
) -> None:
    path = str(tmp_path_factory.mktemp("bound") / "j.db")

    async def main() -> tuple[object, object, int, bytes, int, str]:
        journal = SQLiteJournal(path)
        token = await journal.create("r", {"messages": [{"role": "user", "content": "go"}]})
        await journal.append("r", Entry.MODEL, {"message": {"role": "assistant", "content": content}}, step=1)
        await journal.release("r", token)
        size, raw = stored_size(path, 1)
        bound = max(1, size + offset)
        w = await journal.read_window("r", limit=5, tail=5, max_entry_bytes=bound)
        journal.close()
        async with client(path, max_entry_bytes=bound) as c:
            page = await c.get("/runs/r")
        assert page.status_code == 200
        return w.run.entries[0].data, w.tail, bound, raw, size, page.text

    data, tail, bound, raw, size, page = anyio.run(main)
    assert tail == []
    if size <= bound:
        assert data == {"message": {"role": "assistant", "content": content}}
        assert "too large to read whole" not in page
    else:
        assert data == {
            "$clipped": {"bytes": size, "head": raw[: min(bound, 64 * 1024)].decode("utf-8", "replace")}
        }
        assert f"entry of {size:,} bytes" in page
