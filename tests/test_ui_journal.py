"""The journal reads behind the run inspector: query_runs (SQL and the default), failed/resumed entries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentloop import Agent, Journal, RunLimits, SQLiteJournal, StepLimitExceeded
from agentloop.abc import replay
from agentloop.testing import ScriptedModel, call, text, tool_calls
from agentloop.ui import create_app

sys.path.insert(0, str(Path(__file__).parent))
from ui_runs import make_tools

pytestmark = pytest.mark.anyio


class PlainJournal(Journal):
    """A Journal that only implements the abstract methods: query_runs is the default one."""

    def __init__(self, inner: SQLiteJournal) -> None:
        self.inner = inner

    async def create(self, run_id: str, header: dict[str, Any]) -> str:
        return await self.inner.create(run_id, header)

    async def acquire(self, run_id: str) -> str:
        return await self.inner.acquire(run_id)

    async def release(self, run_id: str, token: str) -> None:
        await self.inner.release(run_id, token)

    async def append(self, run_id: str, kind: str, data: dict[str, Any], **kw: Any) -> None:
        await self.inner.append(run_id, kind, data, **kw)

    async def load(self, run_id: str) -> Any:
        return await self.inner.load(run_id)

    async def list_runs(self) -> list[Any]:
        return await self.inner.list_runs()

    async def delete(self, run_id: str) -> None:
        await self.inner.delete(run_id)


async def journal_of(path: Path, prompts: list[tuple[str, str]]) -> SQLiteJournal:
    journal = SQLiteJournal(path)
    for i, (prompt, output) in enumerate(prompts):
        await Agent(client=ScriptedModel([text(output)]), journal=journal).run(prompt, run_id=f"r{i:03d}")
    return journal


async def test_default_query_runs_agrees_with_the_sql_one(tmp_path: Path) -> None:
    journal = await journal_of(tmp_path / "j.db", [(f"prompt {i}", f"out {i % 3}") for i in range(7)])
    plain = PlainJournal(journal)
    for kw in ({}, {"status": "final"}, {"status": "paused"}, {"search": "out 1"}, {"search": "PROMPT 4"}):
        a, b = await journal.query_runs(limit=3, **kw), await plain.query_runs(limit=3, **kw)
        assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs], kw
        assert a.cursor == b.cursor
        if a.cursor:
            c, d = (
                await journal.query_runs(limit=3, after=a.cursor, **kw),
                await plain.query_runs(limit=3, after=b.cursor, **kw),
            )
            assert [r.run_id for r in c.runs] == [r.run_id for r in d.runs]
    journal.close()


ascii_text = st.text(alphabet=st.sampled_from(list('ab%_!"\\\n <>xyZ')), max_size=8)


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(st.tuples(ascii_text, ascii_text), min_size=1, max_size=6),
    term=ascii_text.filter(str.strip),
)
def test_search_matches_exactly_the_runs_whose_text_contains_the_term(
    tmp_path_factory: pytest.TempPathFactory, runs: list[tuple[str, str]], term: str
) -> None:
    path = tmp_path_factory.mktemp("prop") / "j.db"
    runs = [(p or "p", o or "o") for p, o in runs]

    async def main() -> list[str]:
        journal = await journal_of(path, runs)
        page = await journal.query_runs(search=term.strip(), limit=100)
        journal.close()
        return sorted(r.run_id for r in page.runs)

    needle = term.strip().lower()  # LIKE folds ASCII case, as the inspector's search does
    expected = sorted(
        f"r{i:03d}" for i, (p, o) in enumerate(runs) if needle in p.lower() or needle in o.lower()
    )
    assert anyio.run(main) == expected


async def test_a_stopped_run_journals_why_and_resumes_to_running_then_final(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    tools = make_tools()
    looping = Agent(
        client=ScriptedModel(lambda r: tool_calls(call("read_order", {"order": str(r.step)}))),
        tools=tools,
        journal=journal,
        max_steps=2,
    )
    with pytest.raises(StepLimitExceeded):
        await looping.run("go", run_id="x")
    run = await journal.load("x")
    assert run.info.status == "max_steps" and run.entries[-1].kind == "failed"
    assert run.entries[-1].data["error"] == "StepLimitExceeded"
    assert replay(run).steps == 2  # replay ignores the entry
    agent = Agent(
        client=ScriptedModel([text("done")]), tools=tools, journal=journal, limits=RunLimits(max_steps=5)
    )
    result = await agent.resume("x")
    assert result.output == "done"
    run = await journal.load("x")
    kinds = [e.kind for e in run.entries]
    assert kinds[-3:] == ["resumed", "model", "end"] and run.entries[-3].data == {"after": "max_steps"}
    assert run.info.status == "final"
    journal.close()


async def test_hostile_run_ids_are_linked_and_shown_as_text(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    nasty = ['<b id="x">&amp;</b>', "a/b/state", "q?x=1#frag", "sp ace%20"]
    for rid in nasty:
        await Agent(client=ScriptedModel([text("ok")]), journal=journal).run("hi", run_id=rid)
    journal.close()
    app = create_app(str(tmp_path / "j.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        listing = (await c.get("/")).text
        assert '<b id="x">' not in listing
        import re

        links = re.findall(r'<td class="mono"><a href="(/runs/[^"]+)">', listing)
        assert len(links) == len(nasty)
        for link, rid in zip(links, reversed(nasty), strict=True):
            r = await c.get(link.replace("&amp;", "&"))
            assert r.status_code == 200, (rid, link)
            import html

            assert f'<span class="mono">{html.escape(rid, quote=False)}</span>' in r.text.replace(
                "&#34;", '"'
            ).replace("&#39;", "'")


async def test_a_raised_calls_traceback_is_shown_escaped(tmp_path: Path) -> None:
    # Written through the public Journal API, as a version that journals tracebacks does.
    journal = SQLiteJournal(tmp_path / "j.db")
    token = await journal.create(
        "tb", {"model": "flux-auto", "messages": [{"role": "user", "content": "go"}]}
    )
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "boom", "arguments": "{}"}}],
    }
    usage = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    await journal.append("tb", "model", {"message": message, "usage": usage}, step=1)
    await journal.append("tb", "tool_start", {"name": "boom", "arguments": "{}"}, step=1, call_id="t1")
    await journal.append(
        "tb",
        "tool_end",
        {
            "name": "boom",
            "arguments": {},
            "status": "raised",
            "content": "Tool 'boom' raised ValueError: <x>",
            "duration_s": 0.01,
            "error": "ValueError",
            "raw_arguments": "{}",
            "traceback": 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: <script>x</script>',
        },
        step=1,
        call_id="t1",
    )
    await journal.release("tb", token)
    journal.close()
    app = create_app(str(tmp_path / "j.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        html = (await c.get("/runs/tb")).text
    assert '<pre class="traceback">Traceback (most recent call last):' in html
    assert "ValueError: &lt;script&gt;x&lt;/script&gt;</pre>" in html
    assert '<span class="badge st-interrupted">interrupted</span>' not in html  # it has its outcome


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.one_of(st.sampled_from(["", "final", "paused", "failed", "step_limit"]), st.text(max_size=10)),
    q=st.text(max_size=20),
    after=st.one_of(
        st.none(), st.text(max_size=20), st.sampled_from(["nan:x", "inf:", "-1e309:a", "1:", ":"])
    ),
    run=st.text(min_size=1, max_size=20),
)
@example(status="", q="", after=None, run=".")  # found by hypothesis: a dot segment
@example(status="", q="", after=None, run="..")
def test_hostile_query_strings_never_break_the_pages(
    tmp_path_factory: pytest.TempPathFactory, status: str, q: str, after: str | None, run: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "hostile.db"
    if not path.exists():

        async def make() -> None:
            journal = await journal_of(path, [("hello <b>", "world")])
            journal.close()

        anyio.run(make)

    async def main() -> list[int]:
        app = create_app(str(path))
        params = {"status": status, "q": q, **({"after": after} if after is not None else {})}
        # follow_redirects: a run id of "." or ".." is a dot segment, which the client removes
        # (`/runs/.` is sent as `/runs`); the app redirects that to `/runs/`, which is a 404
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", follow_redirects=True
        ) as c:
            codes = [(await c.get("/", params=params)).status_code]
            codes.append((await c.get("/compare", params=[("run", run), ("run", "r000")])).status_code)
            codes.append((await c.get("/runs/" + quote(run, safe=""), params={"partial": "1"})).status_code)
        return codes

    listing, compare, state = anyio.run(main)
    assert listing in (200, 400)
    assert compare in (200, 404)
    assert state in (200, 404)


def test_a_long_pause_does_not_squash_the_timeline() -> None:
    from agentloop import RunInfo, RunSummary
    from agentloop.abc import JournaledRun, JournalEntry
    from agentloop.ui._view import build_view  # internal unit under test

    t0 = 1_000.0
    calls = [{"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}]
    usage = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    entries = [
        JournalEntry(
            1,
            "model",
            1,
            None,
            {"message": {"role": "assistant", "content": None, "tool_calls": calls}, "usage": usage},
            t0 + 1.0,
        ),
        JournalEntry(
            2,
            "paused",
            1,
            None,
            {"pending": [{"id": "c1", "name": "refund", "arguments": {}, "step": 1}]},
            t0 + 1.1,
        ),
        JournalEntry(3, "approvals", 1, None, {"c1": True}, t0 + 3 * 3600),  # a human answered 3 hours later
        JournalEntry(4, "resumed", 1, None, {"after": "paused"}, t0 + 3 * 3600 + 0.1),
        JournalEntry(5, "tool_start", 1, "c1", {"name": "refund", "arguments": "{}"}, t0 + 3 * 3600 + 0.2),
        JournalEntry(
            6,
            "tool_end",
            1,
            "c1",
            {
                "name": "refund",
                "arguments": {},
                "status": "ok",
                "content": "done",
                "duration_s": 1.0,
                "error": None,
                "raw_arguments": "{}",
            },
            t0 + 3 * 3600 + 1.2,
        ),
    ]
    info = RunInfo("p", "running", "flux-auto", 1, t0, t0 + 3 * 3600 + 1.2)
    run = JournaledRun(info, {"model": "flux-auto", "messages": [{"role": "user", "content": "go"}]}, entries)
    view = build_view(
        run, RunSummary("p", "running", "flux-auto", 1, t0, info.updated_at, 1, 2, False, "go", None)
    )
    call = view.steps[0].calls[0]
    assert call.bar[1] > 100  # a 1 s call stays a tenth of the bar or more, not a 0.01 % sliver
    assert view.steps[0].bar[1] > 100
    assert view.shortened > 3 * 3600 - 10
    assert call.note == "human decision: approved"


WRITER = """
import sys, anyio
from agentloop import SQLiteJournal
async def main():
    j = SQLiteJournal(sys.argv[1])
    token = await j.acquire("r000")
    await j.append("r000", "approvals", {"x": True}, step=1)
    await j.release("r000", token)
    j.close()
anyio.run(main)
"""


async def test_the_read_only_journal_sees_what_another_process_commits(tmp_path: Path) -> None:
    # (The served inspector once kept an old view of the file: see test_ui.py's
    # test_the_served_inspector_sees_commits_of_other_processes.)
    import subprocess

    path = tmp_path / "j.db"
    (await journal_of(path, [("p", "o")])).close()
    reader = SQLiteJournal(path, read_only=True)
    writer = SQLiteJournal(path)
    token = await writer.acquire("r000")  # the inspector journals a decision: its writer stays open
    await writer.append("r000", "approvals", {"y": True}, step=1)
    await writer.release("r000", token)
    for n in (4, 5, 6):
        assert len((await reader.load("r000")).entries) == n - 1
        await anyio.to_thread.run_sync(
            lambda: subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True)
        )
        assert len((await reader.load("r000")).entries) == n
    reader.close()
    writer.close()
