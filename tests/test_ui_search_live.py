"""A live search page searches again only when the journal moved (a search may scan every run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentloop import SQLiteJournal
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio

HEADER = {"model": "m", "messages": [{"role": "user", "content": "refund order 7"}]}


class CountingJournal(SQLiteJournal):
    def __init__(self, path: str) -> None:
        super().__init__(path, read_only=True)
        self.searches = 0

    async def query_runs(self, **kw: Any) -> Any:
        self.searches += bool(kw.get("search"))
        return await super().query_runs(**kw)


async def test_a_live_search_searches_again_only_when_the_journal_moved(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer = SQLiteJournal(path)
    token = await writer.create("r1", HEADER)
    reader = CountingJournal(path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(reader)), base_url="http://127.0.0.1"
    ) as c:
        page = (await c.get("/?q=refund")).text
        src, version = re.search(r'<div id="runs" data-src="([^"]+)" data-version="([^"]+)"', page).groups()
        src = src.replace("&amp;", "&")
        assert reader.searches == 1

        async def poll() -> httpx.Response:
            nonlocal version
            r = await c.get(f"{src}&since={version}")
            version = r.headers["x-agentloop-version"]
            return r

        for _ in range(5):  # nothing moved: 204, and no search
            assert (await poll()).status_code == 204
        assert reader.searches == 1
        t2 = await writer.create("r2", HEADER)  # a new run
        r = await poll()
        assert r.status_code == 200 and "r2" in r.text and reader.searches == 2
        assert (await poll()).status_code == 204 and reader.searches == 2
        await writer.append("r1", "end", {"stop_reason": "final", "output": "done"}, step=1, status="final")
        r = await poll()  # an entry appended: its status changed
        assert r.status_code == 200 and reader.searches == 3
        await writer.release("r1", token)  # no entry, but r1 is no longer running
        r = await poll()
        assert r.status_code == 200 and reader.searches == 4
        assert "running" not in re.search(r"r1</a>.*?</tr>", r.text, re.S).group(0)
        await writer.release("r2", t2)
        assert (await poll()).status_code == 200 and reader.searches == 5
        await writer.delete("r2")
        assert (await poll()).status_code == 200 and reader.searches == 6
        assert (await poll()).status_code == 204 and reader.searches == 6
    writer.close()


async def test_the_change_marker_moves_with_every_write(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    writer = SQLiteJournal(path)
    writer.list_runs_sync()  # the file exists, with no run
    reader = SQLiteJournal(path, read_only=True)
    seen = [await reader.change_marker()]
    token = await writer.create("r", HEADER)
    seen.append(await reader.change_marker())
    for n in range(3):  # appends in quick succession (the same millisecond, maybe)
        await writer.append("r", "message", {"message": {"role": "user", "content": str(n)}}, step=1)
        seen.append(await reader.change_marker())
    await writer.release("r", token)
    seen.append(await reader.change_marker())
    assert len(set(seen)) == len(seen)
    assert await reader.change_marker() == seen[-1]  # and stays put when nothing moves
    reader.close()
    writer.close()
