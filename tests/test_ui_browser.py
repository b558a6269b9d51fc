"""The run inspector in a real browser: Playwright driving the system Chromium (never `playwright install`).

One browser and one served journal per module; skipped, with the reason, where Chromium or the
playwright package is missing. Playwright's sync API runs its own loop, so these tests are sync;
the served `agentloop ui` and the fake router (for the resumed run) are subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ui_browser import browser, served, why_no_browser
from ui_runs import build_journal

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=why_no_browser() or "")

ROUTER = """
import anyio, sys
from agentloop.testing import FakeFluxRouter, text
async def main():
    async with FakeFluxRouter(lambda request: text("Refund approved and done.")) as router:
        print(router.base_url, flush=True)
        await anyio.sleep_forever()
anyio.run(main)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    path = str(tmp_path_factory.mktemp("uib") / "runs.db")
    anyio.run(build_journal, path, False)
    router = subprocess.Popen([sys.executable, "-c", ROUTER], stdout=subprocess.PIPE, text=True)
    try:
        base_url = router.stdout.readline().strip()  # type: ignore[union-attr]
        extra = ("--allow-resume", "--tools", "ui_runs:TOOLS", "--base-url", base_url)
        env = {"PYTHONPATH": str(Path(__file__).parent), "FLUX_API_KEY": "test"}
        with served(path, *extra, env=env) as url, browser() as b:
            page = b.new_page()  # type: ignore[attr-defined]
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.journal = path  # type: ignore[attr-defined]
            yield url.rstrip("/"), page
            assert errors == [], errors  # no CSP violation, no script error on any page
    finally:
        router.terminate()
        router.wait()


def test_runs_list_filter_and_open_a_run(site: tuple[str, Any]) -> None:
    url, page = site
    page.goto(url + "/")
    assert page.locator("tr.run-row").count() == 8
    page.select_option("#status-filter", "failed")  # submits by itself (app.js)
    page.wait_for_url("**status=failed**")
    assert page.locator("tr.run-row").count() == 1
    page.click("a[href='/runs/failed']")
    page.wait_for_url("**/runs/failed")
    assert "FluxRouter answered 503" in page.inner_text(".timeline")


def test_expand_a_call_and_html_results_stay_text(site: tuple[str, Any]) -> None:
    url, page = site
    page.goto(url + "/runs/errors")
    details = page.locator("#call-e5")
    assert not details.evaluate("d => d.open")
    page.click("a.wf-row[data-call='e5']")  # the bar in the waterfall opens its details
    assert details.evaluate("d => d.open")
    assert '<script>document.title="pwned"</script><b>bold</b>' in details.locator("pre.result").inner_text()
    assert page.title() != "pwned" and page.locator("b", has_text="bold").count() == 0
    assert '"url": "https://example.test/"' in details.locator("pre.args").inner_text()


def test_approve_a_paused_call_and_watch_the_run_continue(site: tuple[str, Any]) -> None:
    url, page = site
    page.goto(url + "/runs/refund")
    assert page.inner_text("#run-status") == "paused"
    page.click("#pending-r1 button.approve")
    # the page follows the resumed run by itself (app.js asks for its body with since=version)
    from playwright.sync_api import expect

    expect(page.locator("#run-status")).to_have_text("final", timeout=60_000)
    # read once, not waited for: a body is one snapshot of the journal, so a page that says
    # final holds the run's last messages (#18: it was once seen without the last bubble)
    # text_content, not inner_text: inner_text is the rendered text, and the role labels are
    # upper-cased by the stylesheet, which a reloaded page may not have applied yet ("user" vs
    # "USER": this test failed once that way on a busy machine)
    chat = page.text_content(".chat")
    assert chat is not None and "Refund approved and done." in chat and "refunded 20" in chat
    page.reload()
    assert page.text_content(".chat") == chat


def test_the_runs_list_shows_a_new_run_without_reloading(site: tuple[str, Any]) -> None:
    from playwright.sync_api import expect

    from agentloop import Agent, SQLiteJournal
    from agentloop.testing import ScriptedModel, text

    url, page = site
    page.goto(url + "/")
    rows = page.locator("tr.run-row").count()
    page.locator("input[name=run]").first.check()  # a ticked box survives the update

    async def another() -> None:
        journal = SQLiteJournal(page.journal)
        await Agent(client=ScriptedModel([text("hi")]), journal=journal).run("new one", run_id="brand-new")
        journal.close()

    anyio.run(another, backend="trio")
    expect(page.locator("a[href='/runs/brand-new']")).to_be_visible(timeout=30_000)
    assert page.locator("tr.run-row").count() == rows + 1
    assert page.locator("input[name=run]:checked").count() == 1


def test_a_decision_taken_elsewhere_shows_up_without_reloading(site: tuple[str, Any]) -> None:
    from playwright.sync_api import expect
    from ui_runs import make_tools

    from agentloop import Agent, SQLiteJournal
    from agentloop.testing import ScriptedModel, call, tool_calls

    url, page = site

    async def pause() -> None:
        journal = SQLiteJournal(page.journal)
        model = ScriptedModel([tool_calls(call("refund", {"order": "B-2", "amount": 5}, id="q1"))])
        await Agent(client=model, tools=make_tools(), journal=journal).run(
            "Refund B-2", run_id="second-refund"
        )
        journal.close()

    async def decide() -> None:  # another inspector, or a script: journal a decision
        journal = SQLiteJournal(page.journal)
        token = await journal.acquire("second-refund")
        await journal.append("second-refund", "approvals", {"q1": False}, step=1)
        await journal.release("second-refund", token)
        journal.close()

    # (trio: playwright's sync API keeps an asyncio loop running in this thread)
    anyio.run(pause, backend="trio")
    page.goto(url + "/runs/second-refund")
    expect(page.locator("#pending-q1")).to_be_visible()
    anyio.run(decide, backend="trio")
    expect(page.locator("#pending-q1 .decided")).to_have_text("decided: rejected", timeout=30_000)
