"""The run inspector's ASGI app (agentloop.ui) over journals of real runs, through httpx's ASGI transport."""

from __future__ import annotations

import html as html_module
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import ui_main

from agentloop import Agent, JournalError, SQLiteJournal
from agentloop.testing import ScriptedModel, text
from agentloop.ui import create_app

sys.path.insert(0, str(Path(__file__).parent))
from ui_runs import build_journal, make_tools

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "runs.db"
    anyio.run(build_journal, str(path))
    return path


@pytest.fixture
def db(built: Path, tmp_path: Path) -> str:
    path = tmp_path / "runs.db"
    shutil.copy(built, path)
    return str(path)


class UI:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def html(self, url: str) -> str:
        r = await self.client.get(url)
        assert r.status_code == 200, r.text
        return r.text


async def open_ui(db: str, **kw: Any) -> Any:
    app = create_app(db, **kw)
    return app


@pytest.fixture
async def ui(db: str):
    app = create_app(db)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as c:
            yield UI(app, c)


def run_ids(html: str) -> list[str]:
    return re.findall(r'<input type="checkbox" name="run" value="([^"]+)"', html)


def status_of(html: str, run_id: str) -> str:
    row = html.split(f'name="run" value="{run_id}"', 1)[1]
    return re.search(r'<span class="badge [^"]*">([^<]+)</span>', row).group(1)


async def test_runs_list_shows_every_run_newest_first_with_its_status(ui: UI) -> None:
    html = await ui.html("/")
    assert run_ids(html) == [
        "streamed",
        "resumed",
        "crashed",
        "looping",
        "failed",
        "refund",
        "errors",
        "weather-fast",
        "weather",
    ]
    expected = {
        "weather": "final",
        "refund": "paused",
        "crashed": "interrupted",
        "failed": "failed",
        "looping": "step limit",
        "streamed": "final",
        "resumed": "final",
    }
    assert {k: status_of(html, k) for k in expected} == expected
    assert "9 runs" in html
    row = html.split('name="run" value="weather"', 1)[1].split("</tr>", 1)[0]
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["2", "2", "30"]  # steps, tool calls, tokens


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("final", ["streamed", "resumed", "errors", "weather-fast", "weather"]),
        ("paused", ["refund"]),
        ("interrupted", ["crashed"]),
        ("failed", ["failed"]),
        ("step_limit", ["looping"]),
        ("other_limit", []),
    ],
)
async def test_filter_by_status(ui: UI, status: str, expected: list[str]) -> None:
    assert run_ids(await ui.html(f"/?status={status}")) == expected


async def test_unknown_status_filter_is_a_400_not_a_crash(ui: UI) -> None:
    r = await ui.get("/?status=%3Cscript%3E")
    assert r.status_code == 400 and "<script>" not in r.text and "&lt;script&gt;" in r.text


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("Lisbon", ["weather-fast", "weather"]),  # prompts
        ("outcome unknown", ["resumed"]),  # outputs
        ("Oslo: sunny", ["streamed"]),
        ("%", []),  # LIKE wildcards are literal
        ("_", []),
        ('"', []),  # a quote is searched as JSON encodes it, not as the JSON's own quotes
        ("<img src=x", ["errors"]),
        ("no such words anywhere", []),
    ],
)
async def test_text_search_over_prompts_and_outputs(ui: UI, q: str, expected: list[str]) -> None:
    r = await ui.get("/", params={"q": q})
    assert r.status_code == 200
    assert run_ids(r.text) == expected


async def test_pagination_walks_every_run_once(tmp_path: Path) -> None:
    path = str(tmp_path / "many.db")
    journal = SQLiteJournal(path)
    agent = Agent(client=ScriptedModel(lambda r: text("ok")), journal=journal)
    for i in range(123):
        await agent.run(f"prompt {i}", run_id=f"run-{i:03d}")
    journal.close()
    app = create_app(path)
    seen: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        url = "/"
        pages = 0
        while url:
            html = (await c.get(url)).text
            seen += run_ids(html)
            pages += 1
            m = re.search(r'<a href="([^"]+)" id="older">', html)
            url = m.group(1).replace("&amp;", "&") if m else ""
    assert pages == 3
    assert seen == [f"run-{i:03d}" for i in reversed(range(123))]


async def test_run_page_shows_every_outcome_and_escapes_tool_and_model_text(ui: UI) -> None:
    html = await ui.html("/runs/errors")
    for status in ("unknown_tool", "invalid_arguments", "raised", "timeout", "ok"):
        assert f'<span class="badge st-{status}">{status}</span>' in html
    assert (
        "<script>document" not in html
        and "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in html
    )
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>" not in html
    assert html.count("<script") == 1  # only the inspector's own file
    assert "ZeroDivisionError" in html
    assert '"a": 1,\n  "b": 0' in html_module.unescape(html)  # pretty JSON arguments
    assert "15 tok" in html and "<td>total</td>" in html


async def test_every_response_carries_the_strict_csp(ui: UI) -> None:
    for url in ("/", "/runs/errors", "/runs/nope", "/static/app.js", "/compare?run=weather&run=refund"):
        r = await ui.get(url)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp, url
        assert r.headers["x-content-type-options"] == "nosniff"
    assert (await ui.get("/runs/nope")).status_code == 404


async def test_resume_markers_and_replayed_versus_not_rerun_calls(ui: UI) -> None:
    html = await ui.html("/runs/resumed")
    assert "resumed after it was interrupted" in html
    # the marker's kind (an abc.Entry) renders as the entry's plain name, the CSS class app.css styles
    assert '<div class="marker resumed">resumed after it was interrupted</div>' in html
    assert "replayed from the journal (not run again)" in html
    assert "not re-run after the crash (not idempotent, or not registered on resume)" in html
    crashed = await ui.html("/runs/crashed")
    assert '<span class="badge st-interrupted">interrupted</span>' in crashed


async def test_failed_and_step_limit_runs_say_why(ui: UI) -> None:
    assert "APIError: FluxRouter answered 503: overloaded" in await ui.html("/runs/failed")
    assert "StepLimitExceeded" in await ui.html("/runs/looping")


async def test_compare_highlights_the_differences(ui: UI) -> None:
    html = await ui.html("/compare?run=weather&run=weather-fast")
    rows = dict(re.findall(r'<tr class="(differs|same)"><th>([^<]+)</th>', html)[i][::-1] for i in range(8))
    assert rows["model"] == "differs" and rows["prompt"] == "same" and rows["tool calls"] == "differs"
    assert (await ui.get("/compare?run=weather")).status_code == 400


def state(r: httpx.Response) -> dict[str, Any]:
    """A live update's state headers (what app.js reads), as a dict."""
    h = r.headers
    return {
        "version": h["x-agentloop-version"],
        "live": h["x-agentloop-live"] == "1",
        "status": h["x-agentloop-status"],
    }


async def test_a_live_update_changes_version_when_the_journal_moves(db: str, ui: UI) -> None:
    before = state(await ui.get("/runs/refund?partial=1"))
    assert before["live"] is False and before["status"] == "paused"
    journal = SQLiteJournal(db)
    token = await journal.acquire("refund")
    await journal.append("refund", "approvals", {"r1": True}, step=1)
    await journal.release("refund", token)
    journal.close()
    after = state(await ui.get("/runs/refund?partial=1"))
    assert after["version"] != before["version"]
    assert "decided: approved" in await ui.html("/runs/refund")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def test_decisions_need_the_page_csrf_token(ui: UI) -> None:
    r = await ui.client.post("/decide/refund", data={"call_id": "r1", "decision": "approve", "csrf": "x"})
    assert r.status_code == 403
    assert "decided" not in await ui.html("/runs/refund")


@pytest.mark.parametrize(
    ("decision", "value", "expected"),
    [
        ("approve", "", "refunded 20"),
        ("reject", "too much", "too much"),
        ("override", '{"refunded": 0}', '{"refunded":0}'),
    ],
)
async def test_approve_reject_override_resume_the_run(
    db: str, decision: str, value: str, expected: str
) -> None:
    tools = make_tools()

    def factory(model: str | None, journal: SQLiteJournal) -> Agent:
        return Agent(client=ScriptedModel([text("Done with the refund.")]), tools=tools, journal=journal)

    app = create_app(db, agent_factory=factory)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as c:
            csrf = csrf_of((await c.get("/runs/refund")).text)
            r = await c.post(
                "/decide/refund", data={"call_id": "r1", "decision": decision, "value": value, "csrf": csrf}
            )
            assert r.status_code == 303
            with anyio.fail_after(20):
                await app.state.inspector.done["refund"].wait()
            html = (await c.get("/runs/refund")).text
    assert app.state.inspector.errors == {}
    assert '<span class="badge ok" id="run-status">final</span>' in html
    assert "Done with the refund." in html and expected in html_module.unescape(html)
    assert "resumed after it was paused" in html


async def test_a_decision_for_a_call_that_is_not_pending_is_refused(ui: UI) -> None:
    csrf = csrf_of(await ui.html("/runs/refund"))
    r = await ui.client.post("/decide/refund", data={"call_id": "nope", "decision": "approve", "csrf": csrf})
    assert r.status_code == 409 and "not waiting for a decision" in r.text
    r = await ui.client.post("/decide/weather", data={"call_id": "w1", "decision": "approve", "csrf": csrf})
    assert r.status_code == 409


async def test_decisions_are_recorded_without_resume(ui: UI) -> None:
    csrf = csrf_of(await ui.html("/runs/refund"))
    r = await ui.client.post(
        "/decide/refund", data={"call_id": "r1", "decision": "reject", "value": "<b>no</b>", "csrf": csrf}
    )
    assert r.status_code == 303
    html = await ui.html("/runs/refund")
    assert "decided: rejected: &lt;b&gt;no&lt;/b&gt;" in html and "agent.resume" in html


async def test_host_header_is_checked(ui: UI) -> None:
    r = await ui.get("/", headers={"host": "evil.example"})
    assert r.status_code == 421
    assert (await ui.get("/", headers={"host": "localhost:8765"})).status_code == 200


async def test_token_guards_every_page(db: str) -> None:
    app = create_app(db, token="s3cret", host="0.0.0.0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://0.0.0.0") as c:
        assert (await c.get("/")).status_code == 401
        assert (await c.get("/static/app.js")).status_code == 401
        assert (await c.get("/?token=wrong")).status_code == 401
        r = await c.get("/?token=s3cret")
        assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
        assert (await c.get("/runs/weather")).status_code == 200  # the cookie
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://0.0.0.0") as c:
        assert (await c.get("/", headers={"authorization": "Bearer s3cret"})).status_code == 200


async def test_the_inspector_reads_while_a_worker_holds_the_write_lock(ui: UI, db: str) -> None:
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a worker mid-commit
    writer.execute("UPDATE agentloop_runs SET steps = 99 WHERE run_id = 'weather'")
    try:
        with anyio.fail_after(5):
            html = await ui.html("/runs/weather")
        assert "<dd>2</dd>" in html  # the last committed state, not the uncommitted one
    finally:
        writer.rollback()
        writer.close()


async def test_read_only_journal_refuses_writes(db: str) -> None:
    journal = SQLiteJournal(db, read_only=True)
    assert [r.run_id for r in (await journal.query_runs(status="paused")).runs] == ["refund"]
    with pytest.raises(JournalError, match="read-only"):
        await journal.acquire("refund")
    journal.close()
    with pytest.raises(JournalError, match="no journal"):
        await SQLiteJournal(Path(db).with_name("missing.db"), read_only=True).list_runs()


def test_import_agentloop_does_not_import_the_web_stack() -> None:
    code = "import sys, agentloop; print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_refuses_a_public_host_without_a_token(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ui_main(["--journal", db, "--host", "0.0.0.0"]) == 2
    assert "without --token" in capsys.readouterr().err
    assert ui_main(["--journal", db, "--allow-resume"]) == 2
    assert ui_main(["--journal", db + ".missing"]) == 1
    assert "no journal at" in capsys.readouterr().err


async def test_a_running_run_is_live_and_its_state_moves_as_steps_land(tmp_path: Path) -> None:
    path = str(tmp_path / "live.db")
    journal = SQLiteJournal(path)
    tools = make_tools()
    release, started = anyio.Event(), anyio.Event()

    @tools.tool
    async def wait_here() -> str:
        """Blocks until the test lets it go."""
        started.set()
        await release.wait()
        return "let go"

    from agentloop.testing import call, tool_calls

    agent = Agent(
        client=ScriptedModel([tool_calls(call("wait_here", {}, id="h1")), text("finished")]),
        tools=tools,
        journal=journal,
    )
    app = create_app(path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                await agent.run("hold on", run_id="live")

            tg.start_soon(go)
            with anyio.fail_after(10):
                await started.wait()
            during = state(await c.get("/runs/live?partial=1"))
            assert during["live"] is True and during["status"] == "running"
            page = (await c.get("/runs/live")).text
            assert 'data-live="1"' in page and '<span class="badge st-running">running</span>' in page
            assert 'class="badge live">running</span>' in (await c.get("/")).text
            release.set()
        after = state(await c.get("/runs/live?partial=1"))
        assert after["live"] is False and after["status"] == "final" and after["version"] != during["version"]
        partial = (await c.get("/runs/live?partial=1")).text
        assert "<html" not in partial and "finished" in partial and "let go" in partial
    journal.close()


def test_cli_serves_the_journal_and_generates_a_token(db: str) -> None:
    from ui_browser import served

    with served(db, "--token", "generate") as url:
        assert "?token=" in url
        bare = url.split("?")[0]
        assert httpx.get(bare, trust_env=False).status_code == 401
        r = httpx.get(url, trust_env=False)
        assert r.status_code == 200 and "weather-fast" in r.text
        assert httpx.get(bare + "static/app.js", cookies=r.cookies, trust_env=False).status_code == 200


async def test_a_file_that_is_not_a_journal_gives_an_error_page(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    app = create_app(str(other))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.get("/")
    assert r.status_code == 500 and "cannot be read as an agentloop journal" in r.text
    assert "content-security-policy" in r.headers


def test_the_served_inspector_sees_commits_of_other_processes(db: str) -> None:
    # Regression: the served inspector kept a long-lived mode=ro connection, which went on
    # showing the journal as it was once another process had committed and closed: a paused
    # run's page never showed a decision journaled elsewhere.
    from ui_browser import served

    from agentloop.testing import call, tool_calls

    async def pause() -> None:
        journal = SQLiteJournal(db)
        model = ScriptedModel([tool_calls(call("refund", {"order": "B-2", "amount": 5}, id="q1"))])
        await Agent(client=model, tools=make_tools(), journal=journal).run("Refund B-2", run_id="s2")
        journal.close()

    async def decide() -> None:
        journal = SQLiteJournal(db)
        token = await journal.acquire("s2")
        await journal.append("s2", "approvals", {"q1": False}, step=1)
        await journal.release("s2", token)
        journal.close()

    with served(db) as url, httpx.Client(trust_env=False, base_url=url) as c:
        csrf = csrf_of(c.get("/runs/refund").text)
        assert (
            c.post("/decide/refund", data={"call_id": "r1", "decision": "reject", "csrf": csrf}).status_code
            == 303
        )
        anyio.run(pause)
        before = state(c.get("/runs/s2?partial=1"))["version"]
        anyio.run(decide)
        assert state(c.get("/runs/s2?partial=1"))["version"] != before
        assert "decided: rejected" in c.get("/runs/s2").text


async def test_a_second_decision_while_the_run_resumes_is_refused_and_resumes_once(db: str) -> None:
    # Regression: two decisions posted back to back (two tabs, a double click) both found the
    # call pending before the first resume took the run's lease: two resumes raced, and the
    # loser's RunLockedError was shown as "resuming failed" on a run that had finished fine.
    tools = make_tools()
    made: list[str | None] = []

    def factory(model: str | None, journal: SQLiteJournal) -> Agent:
        made.append(model)
        return Agent(client=ScriptedModel([text("Done with the refund.")]), tools=tools, journal=journal)

    app = create_app(db, agent_factory=factory)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as c:
            csrf = csrf_of((await c.get("/runs/refund")).text)
            form = {"call_id": "r1", "decision": "approve", "csrf": csrf}
            first = await c.post("/decide/refund", data=form)
            second = await c.post("/decide/refund", data={**form, "decision": "reject"})
            assert first.status_code == 303 and second.status_code == 409
            assert "being resumed" in second.text
            for _ in range(200):  # each request lets the resume task run; it ends in a few
                page = (await c.get("/runs/refund")).text
                if 'id="run-status">final<' in page:
                    break
            assert 'id="run-status">final<' in page and "resuming failed" not in page
    assert len(made) == 1
