"""The inspector's live pages while a writer commits: every page and update is one snapshot.

Regression (#18): a live run's page was once seen "final" without its last message bubble. The
page read the run's entries and its summary (status, lease) in two reads; a writer that
committed the run's last entries between them gave a page whose badge said "final" (and which
stopped following the run) over entries without the final answer. The writer here is driven
step by step from the reads the app makes (a `SQLiteJournal` subclass given to `create_app`),
so each interleaving is hit deterministically, without sleeping.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from agentloop import SQLiteJournal
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio

Write = Callable[[], Awaitable[None]]
FINAL_TEXT = "All done: refunded 20."
WAITING = ("paused", "interrupted")  # a run's page follows these too (a decision, a resume)


class SteppedJournal(SQLiteJournal):
    """A read-only journal that lets the writer commit its next `per_read` writes after each read."""

    def __init__(self, path: str, writes: list[Write], per_read: int) -> None:
        super().__init__(path, read_only=True)
        self.writes, self.per_read, self.reads = writes, per_read, 0

    async def _after_read(self) -> None:
        self.reads += 1
        for _ in range(self.per_read):
            if self.writes:
                await self.writes.pop(0)()

    async def load(self, run_id: str) -> Any:
        run = await super().load(run_id)
        await self._after_read()
        return run

    async def run_summary(self, run_id: str) -> Any:
        summary = await super().run_summary(run_id)
        await self._after_read()
        return summary

    async def load_with_summary(self, run_id: str) -> Any:
        both = await super().load_with_summary(run_id)
        await self._after_read()
        return both

    async def read_window(self, run_id: str, **kw: Any) -> Any:
        window = await super().read_window(run_id, **kw)
        await self._after_read()
        return window

    async def query_runs(self, **kw: Any) -> Any:
        page = await super().query_runs(**kw)
        await self._after_read()
        return page


async def half_run(path: str) -> tuple[SQLiteJournal, list[Write]]:
    """A run whose tool call is done, through the public journal API, and the writes that finish
    it (the model's final answer, the end entry, the lease released), to be made one by one."""
    journal = SQLiteJournal(path)
    token = await journal.create("r1", {"model": "m", "messages": [{"role": "user", "content": "refund"}]})
    call = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": '{"amount": 20}'}}
    usage = {"requests": 1, "prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    await journal.append("r1", "model", {"message": message, "usage": usage}, step=1)
    await journal.append(
        "r1", "tool_start", {"name": "refund", "arguments": {"amount": 20}}, step=1, call_id="c1"
    )
    end = {
        "name": "refund",
        "arguments": {"amount": 20},
        "status": "ok",
        "content": "refunded",
        "duration_s": 0.1,
    }
    await journal.append("r1", "tool_end", end, step=1, call_id="c1")
    final = {"message": {"role": "assistant", "content": FINAL_TEXT}, "usage": usage}

    async def answer() -> None:
        await journal.append("r1", "model", final, step=2)

    async def finish() -> None:
        await journal.append(
            "r1", "end", {"stop_reason": "final", "output": FINAL_TEXT}, step=2, status="final"
        )

    async def release() -> None:
        await journal.release("r1", token)

    return journal, [answer, finish, release]


def badge(body: str) -> str:
    return re.search(r'id="run-status">([^<]+)<', body).group(1)


def shown_consistently(body: str, live: bool) -> None:
    """What a page may show: "final" only with the final answer, and a page that is not followed
    (not live) only when the run has stopped."""
    status = badge(body)
    if status == "final":
        assert FINAL_TEXT in body, "the page says final without the run's last message"
    if not live:
        assert status != "running"
    if FINAL_TEXT not in body:
        assert live, "a page without the final answer is not followed live"


async def stepped(path: str, before: int, per_read: int) -> tuple[SQLiteJournal, SteppedJournal]:
    """A half run with its first `before` finishing writes made, and a reader that lets the
    writer make the rest, `per_read` after each read the inspector makes."""
    writer, writes = await half_run(path)
    for write in writes[:before]:
        await write()
    return writer, SteppedJournal(path, writes[before:], per_read)


@pytest.mark.parametrize("before", [0, 1, 2])
@pytest.mark.parametrize("per_read", [1, 3])
async def test_a_run_page_is_one_snapshot_while_the_writer_commits(
    tmp_path: Path, before: int, per_read: int
) -> None:
    writer, reader = await stepped(str(tmp_path / "j.db"), before, per_read)
    app = create_app(reader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        page = (await c.get("/runs/r1")).text
    assert reader.reads >= 1
    shown_consistently(page, 'data-live="1"' in page)
    writer.close()


async def follow_like_the_page(c: httpx.AsyncClient, url: str) -> list[tuple[str, bool]]:
    """What app.js does on a run's page: load it; while it is followed, ask its data-src with the
    version it shows (204: nothing moved; 200: a new body and version). Returns every (body,
    live) the page showed."""
    page = (await c.get(url)).text
    box = re.search(r'<div id="run" data-src="([^"]+)" data-version="([^"]+)" data-live="(\d)">', page)
    assert box is not None
    src, version, live = html.unescape(box[1]), html.unescape(box[2]), box[3] == "1"
    shown, body = [(page, live)], page
    followed, settled = live or badge(page) in WAITING, False
    for _ in range(50):
        if not followed:
            break
        r = await c.get(f"{src}&since={quote(version, safe='')}")
        assert r.status_code in (200, 204), r.text
        if r.status_code == 200:
            body, version = r.text, r.headers["x-agentloop-version"]
        live = r.headers["x-agentloop-live"] == "1"
        shown.append((body, live))
        if live or r.headers["x-agentloop-status"] in WAITING:
            settled = False
        elif settled:
            followed = False
        else:
            settled = True
    assert not followed, "the page never settled"
    return shown


@pytest.mark.parametrize("before", [0, 1, 2, 3])
@pytest.mark.parametrize("per_read", [1, 2, 3])
async def test_a_followed_run_page_ends_final_with_its_last_message(
    tmp_path: Path, before: int, per_read: int
) -> None:
    writer, reader = await stepped(str(tmp_path / "j.db"), before, per_read)
    app = create_app(reader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        shown = await follow_like_the_page(c, "/runs/r1")
    for body, live in shown:
        shown_consistently(body, live)
    last, live = shown[-1]
    assert badge(last) == "final" and FINAL_TEXT in last and not live
    assert not reader.writes  # every write landed while the page was followed (or before it)
    writer.close()


def rows_of(body: str) -> dict[str, str]:
    found = re.findall(r'name="run" value="([^"]+)".*?<span class="badge [^"]*">([^<]+)</span>', body, re.S)
    return dict(found)


async def test_the_runs_list_follows_new_runs_and_status_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, finish_r1 = await half_run(path)
    header = {"model": "m", "messages": [{"role": "user", "content": "second"}]}
    tokens: dict[str, str] = {}

    async def new_run() -> None:
        tokens["r2"] = await writer.create("r2", header)

    reader = SteppedJournal(path, [new_run, *finish_r1], per_read=1)
    app = create_app(reader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        page = (await c.get("/")).text  # read, then r2 is created
        assert rows_of(page) == {"r1": "running"} and "1 run<" in page
        box = re.search(r'<div id="runs" data-src="([^"]+)" data-version="([^"]+)"', page)
        src, version = html.unescape(box[1]), box[2]
        seen = []
        for _ in range(6):
            r = await c.get(f"{src}&since={version}")
            if r.status_code == 200:
                version = r.headers["x-agentloop-version"]
                assert "<html" not in r.text
                seen.append((rows_of(r.text), re.search(r'id="runs-count">(\d+) run', r.text)[1]))
            else:
                assert r.status_code == 204 and r.content == b""
                seen.append(None)
    # every update is one snapshot: r2 appears with the count; r1's answer lands (still running),
    # then its end (final but still leased: running), then its lease goes (final); then nothing
    assert seen == [
        ({"r2": "running", "r1": "running"}, "2"),
        ({"r2": "running", "r1": "running"}, "2"),
        ({"r2": "running", "r1": "running"}, "2"),
        ({"r2": "running", "r1": "final"}, "2"),
        None,
        None,
    ]
    await writer.release("r2", tokens["r2"])
    writer.close()


async def test_an_interrupted_runs_page_follows_its_resume_to_the_end(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, writes = await half_run(path)
    await writes[-1]()  # the lease is given up without an end: the run is interrupted
    tokens: list[str] = []

    async def take_over() -> None:  # another process resumes it
        tokens.append(await writer.acquire("r1"))
        await writer.append("r1", "resumed", {"after": "running"}, step=1, status="running")

    async def answer() -> None:
        await writer.append("r1", "model", {"message": {"role": "assistant", "content": FINAL_TEXT}}, step=2)

    async def finish() -> None:
        await writer.append(
            "r1", "end", {"stop_reason": "final", "output": FINAL_TEXT}, step=2, status="final"
        )
        await writer.release("r1", tokens[0])

    reader = SteppedJournal(path, [take_over, answer, finish], per_read=1)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(reader)), base_url="http://127.0.0.1"
    ) as c:
        # page=1: one read (without a page number the latest page is looked up first)
        shown = await follow_like_the_page(c, "/runs/r1?page=1")
    assert badge(shown[0][0]) == "interrupted"
    last, live = shown[-1]
    assert badge(last) == "final" and FINAL_TEXT in last and not live
    writer.close()


async def test_load_with_summary_describes_exactly_the_entries_it_returns(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, writes = await half_run(path)
    reader = SQLiteJournal(path, read_only=True)
    for write in [None, *writes]:
        if write is not None:
            await write()
        run, summary = await reader.load_with_summary("r1")
        kinds = [e.kind for e in run.entries]
        assert summary.status == run.info.status and summary.updated_at == run.info.updated_at
        assert summary.tool_calls == kinds.count("tool_end")
        assert summary.total_tokens == 10 * kinds.count("model")
        assert summary.output == (FINAL_TEXT if "end" in kinds else None)
        assert summary == await reader.run_summary("r1")  # nothing moved in between here
    assert summary.live is False and summary.status == "final"
    reader.close()
    writer.close()
