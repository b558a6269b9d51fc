"""A run's page is one window of its entries: a run of 100,000 calls is read and sent a page at a time.

From the outside: pages over HTTP through the real app, a live page followed while a stepped
writer commits (no sleeps), hostile page numbers and run ids in the pager's links.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ui_live import SteppedJournal, Write, follow_like_the_page

from agentloop import SQLiteJournal
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio

USAGE = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def step_writes(journal: SQLiteJournal, run_id: str, step: int, calls: int = 1) -> list[Write]:
    """The journal writes of one step: its model answer, then each call's start and outcome."""
    ids = [f"s{step}c{k}" for k in range(calls)]
    tcs = [{"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ids]

    async def model() -> None:
        message = {"role": "assistant", "content": None, "tool_calls": tcs}
        await journal.append(run_id, "model", {"message": message, "usage": USAGE}, step=step)

    def tool(i: str, kind: str) -> Write:
        async def write() -> None:
            data = {"name": "lookup", "arguments": {}}
            if kind == "tool_end":
                data |= {"status": "ok", "content": f"result of {i}", "duration_s": 0.0, "error": None}
            await journal.append(run_id, kind, data, step=step, call_id=i)

        return write

    return [model, *(tool(i, "tool_start") for i in ids), *(tool(i, "tool_end") for i in ids)]


async def long_run(path: str, run_id: str, steps: int, calls: int = 1) -> tuple[SQLiteJournal, str]:
    journal = SQLiteJournal(path)
    token = await journal.create(run_id, {"model": "m", "messages": [{"role": "user", "content": "go"}]})
    for s in range(1, steps + 1):
        for write in step_writes(journal, run_id, s, calls):
            await write()
    return journal, token


def calls_on(body: str) -> list[str]:
    return re.findall(r'<details class="call" id="call-([^"]+)"', body)


def pager_links(body: str) -> dict[str, str]:
    return {
        k: html.unescape(v)
        for v, k in re.findall(r'<a href="([^"]+)" class="(first|earlier|later|latest)"', body)
    }


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_every_call_of_a_long_run_is_on_exactly_one_page(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "long", steps=40, calls=3)  # 40 * 7 = 280 entries
    await writer.append("long", "end", {"stop_reason": "final", "output": "done"}, step=40, status="final")
    await writer.release("long", token)
    app = create_app(path, entries_per_page=25)
    seen: list[str] = []
    sizes = []
    async with client(app) as c:
        latest = await c.get("/runs/long")  # no page number: the latest page
        assert "page 12 of 12" in latest.text and "finished: final" in latest.text
        url: str | None = pager_links(latest.text)["first"]
        while url is not None:
            r = await c.get(url)
            assert r.status_code == 200
            sizes.append(len(r.content))
            seen += calls_on(r.text)
            url = pager_links(r.text).get("later")
    assert len(sizes) == 12
    assert sorted(seen) == sorted(f"s{s}c{k}" for s in range(1, 41) for k in range(3))  # once each
    assert "page 1 of 12" in (await client(app).get("/runs/long?page=1")).text
    writer.close()


async def test_a_calls_outcome_written_after_its_page_is_shown_on_its_page(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=1, calls=6)  # model at seq 1, ends at 8..13
    await writer.release("r", token)
    async with client(create_app(path, entries_per_page=4)) as c:
        first = (await c.get("/runs/r?page=1")).text
        second = (await c.get("/runs/r?page=2")).text
    assert calls_on(first) == [f"s1c{k}" for k in range(6)] and calls_on(second) == []
    assert first.count('<span class="badge st-ok">ok</span>') == 6  # outcomes from beyond the page
    assert "result of s1c5" in first and "result of s1c5" not in second
    writer.close()


async def test_page_bytes_do_not_grow_with_the_run(tmp_path: Path) -> None:
    sizes = {}
    for steps in (20, 200):
        path = str(tmp_path / f"{steps}.db")
        writer, token = await long_run(path, "r", steps=steps)
        await writer.release("r", token)
        async with client(create_app(path, entries_per_page=30)) as c:
            sizes[steps] = max([len((await c.get(f"/runs/r?page={n}")).content) for n in (1, 2)])
        writer.close()
    assert sizes[200] < sizes[20] * 1.1  # ten times the calls, the same page


@pytest.mark.parametrize("per_read", [1, 2, 5])
async def test_a_live_page_never_skips_or_repeats_a_call_across_pages(tmp_path: Path, per_read: int) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=2)  # 6 entries: page 1 of 10 is not full yet
    writes: list[Write] = []
    for s in range(3, 9):
        writes += step_writes(writer, "r", s)

    async def finish() -> None:
        await writer.append("r", "end", {"stop_reason": "final", "output": "done"}, step=8, status="final")
        await writer.release("r", token)

    reader = SteppedJournal(path, [*writes, finish], per_read)
    app = create_app(reader, entries_per_page=10)
    async with client(app) as c:
        shown = await follow_like_the_page(c, "/runs/r")  # the page it opens on is followed as it fills
        assert not reader.writes
        last, live = shown[-1]
        assert not live and "page 1 of 3" in last
        seen = calls_on(last)
        for url in (pager_links(last)["later"], pager_links(last)["latest"]):
            body = (await c.get(url)).text
            seen += calls_on(body)
    for body, _ in shown:  # what the page showed while it filled: always a prefix, never another page's
        assert calls_on(body) == seen[: len(calls_on(body))]
    assert sorted(seen) == sorted(f"s{s}c0" for s in range(1, 9))
    assert len(seen) == len(set(seen))
    writer.close()


@pytest.mark.parametrize(
    "page", ["0", "-1", "abc", "1e3", "1.5", "99999999999", "10000000000000000000000", "\u0661", " 1", "0x10"]
)
async def test_a_bad_page_number_is_a_400(tmp_path: Path, page: str) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=1)
    async with client(create_app(path)) as c:
        r = await c.get("/runs/r", params={"page": page})
        live = await c.get("/runs/r", params={"page": page, "partial": "1", "since": "x"})
    assert r.status_code == 400 and "page must be a number" in r.text
    assert live.status_code == 400
    await writer.release("r", token)
    writer.close()


async def test_a_page_past_the_end_is_empty_and_links_back(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=5)
    await writer.release("r", token)
    async with client(create_app(path, entries_per_page=4)) as c:
        r = await c.get("/runs/r?page=1000000000")
    assert r.status_code == 200 and calls_on(r.text) == []
    assert pager_links(r.text)["latest"].endswith("page=4")
    writer.close()


EVIL_ID = '"><script>alert(1)</script><a href="x&page=9'


async def test_pager_links_of_a_hostile_run_id_stay_its_own_and_inert(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, EVIL_ID, steps=6)
    await writer.release(EVIL_ID, token)
    async with client(create_app(path, entries_per_page=5)) as c:
        first = (await c.get("/runs/" + quote(EVIL_ID, safe=""), params={"page": "1"})).text
        assert "<script>alert(1)" not in first and calls_on(first)
        links = pager_links(first)
        assert set(links) == {"later", "latest"}
        for url in links.values():
            assert url.startswith("/runs/%22%3E%3Cscript%3E") and url.count("page=") == 1
            r = await c.get(url)
            assert r.status_code == 200 and EVIL_ID in html.unescape(r.text)
    writer.close()


async def test_counts_cover_the_whole_run_and_restart_when_the_run_is_made_again(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=10, calls=2)
    async with client(create_app(path, entries_per_page=5)) as c:
        body = (await c.get("/runs/r?page=1")).text
        assert "<dt>tool calls</dt><dd>20</dd>" in body and "<dt>tokens</dt><dd>30</dd>" in body
        for write in step_writes(writer, "r", 11):
            await write()
        body = (await c.get("/runs/r?page=2")).text  # counts only the new entries, adds them
        assert "<dt>tool calls</dt><dd>21</dd>" in body and "<dt>tokens</dt><dd>33</dd>" in body
        await writer.release("r", token)
        await writer.delete("r")
        writer2, token2 = await long_run(path, "r", steps=1)
        body = (await c.get("/runs/r?page=1")).text
        assert "<dt>tool calls</dt><dd>1</dd>" in body and "<dt>tokens</dt><dd>3</dd>" in body
        await writer2.release("r", token2)
        writer2.close()
    writer.close()


async def test_read_window_is_one_bounded_read(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer, token = await long_run(path, "r", steps=4)  # seq 1..12
    await writer.release("r", token)
    reader = SQLiteJournal(path, read_only=True)
    w = await reader.read_window("r", first=4, limit=3, tail=2)
    assert [e.seq for e in w.run.entries] == [4, 5, 6] and [e.seq for e in w.tail] == [11, 12]
    assert w.last_seq == 12 and w.summary.tool_calls == 4 and w.summary.total_tokens == 12
    later = await reader.read_window("r", counted=6)  # only entries after seq 6 are counted
    assert later.run.entries == [] and later.tail == []
    assert (later.summary.tool_calls, later.summary.total_tokens) == (2, 6)
    near_end = await reader.read_window("r", first=10, limit=5, tail=4)
    assert [e.seq for e in near_end.run.entries] == [10, 11, 12] and near_end.tail == []
    reader.close()
    writer.close()


TOKENS = [7, -3, 0, True, 2.5, "12", None, [1], {"n": 1}, 2**40 - 1, 2**62, -(2**63)]


@pytest.mark.parametrize("bad", [False, True])
async def test_counts_read_by_sqlite_take_only_integer_tokens(tmp_path: Path, bad: bool) -> None:
    # the counts are summed by SQLite (json_extract), not by Python: a journal of the wrong
    # shape (a string, a float, a list for total_tokens, no usage at all) counts 0 for that answer,
    # and so does a nonsense count (2**40 or more) that would overflow the sum
    path = str(tmp_path / "j.db")
    journal = SQLiteJournal(path)
    token = await journal.create("r", {"model": "m", "messages": []})
    for step, value in enumerate(TOKENS, 1):
        usage: Any = {"total_tokens": value} if not bad else [value]
        await journal.append(
            "r", "model", {"message": {"role": "assistant", "content": "x"}, "usage": usage}, step=step
        )
    await journal.append("r", "end", {"stop_reason": "final", "output": "first"}, step=10, status="final")
    await journal.append("r", "end", {"stop_reason": "final", "output": "second"}, step=10, status="final")
    await journal.release("r", token)
    expected = 0 if bad else sum(v for v in TOKENS if isinstance(v, int) and abs(v) < 2**40)
    summary = await journal.run_summary("r")
    assert summary.total_tokens == expected and summary.output == "second"
    page = await journal.query_runs()
    assert page.runs[0].total_tokens == expected
    journal.close()


@pytest.mark.parametrize("size", [0, -5, 100_001, 10**18])
def test_a_nonsense_page_size_is_refused_up_front(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="entries_per_page"):
        create_app(str(tmp_path / "j.db"), entries_per_page=size)


async def test_two_decisions_posted_at_once_are_both_journaled(tmp_path: Path) -> None:
    # Regression: two pending calls decided at once (two quick clicks): both decisions took the
    # run's lease through the inspector's one writer, and the second was refused with a 409
    # "being run by another process" although nothing else ran the run.
    path = str(tmp_path / "j.db")
    journal = SQLiteJournal(path)
    token = await journal.create("p", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
    fn = {"name": "refund", "arguments": "{}"}
    calls = [{"id": i, "type": "function", "function": fn} for i in ("a", "b")]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    await journal.append("p", "model", {"message": message, "usage": USAGE}, step=1)
    pending = [{"id": i, "name": "refund", "arguments": {}, "step": 1} for i in ("a", "b")]
    await journal.append("p", "paused", {"pending": pending}, step=1, status="paused")
    await journal.release("p", token)
    app = create_app(path)
    async with client(app) as c:
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/runs/p")).text).group(1)
        codes: list[int] = []

        async def decide(call_id: str) -> None:
            form = {"call_id": call_id, "decision": "approve", "csrf": csrf}
            codes.append((await c.post("/decide/p", data=form)).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(decide, "a")
            tg.start_soon(decide, "b")
        assert codes == [303, 303]
        page = (await c.get("/runs/p")).text
    assert page.count("decided: approved") == 2
    journal.close()


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    page=st.one_of(st.none(), st.text(max_size=12), st.integers(-(2**70), 2**70).map(str)),
    since=st.one_of(st.none(), st.text(max_size=40)),
    partial=st.one_of(st.none(), st.text(max_size=3)),
)
def test_hostile_page_queries_never_break_a_run_page(
    tmp_path_factory: pytest.TempPathFactory, page: str | None, since: str | None, partial: str | None
) -> None:
    path = tmp_path_factory.getbasetemp() / "pages.db"
    if not path.exists():

        async def make() -> None:
            writer, token = await long_run(str(path), "r", steps=12)
            await writer.release("r", token)
            writer.close()

        anyio.run(make)

    async def main() -> httpx.Response:
        params = {
            k: v for k, v in {"page": page, "since": since, "partial": partial}.items() if v is not None
        }
        async with client(create_app(str(path), entries_per_page=7)) as c:
            return await c.get("/runs/r", params=params)

    r = anyio.run(main)
    assert r.status_code in (200, 204, 400), r.text[:300]
    if r.status_code == 200:
        assert ("<script>" not in r.text and (since is not None and partial)) or "page " in r.text
