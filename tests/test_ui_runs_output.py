"""A run's final output is read clipped by SQLite for the runs list and a run's summary.

Regression: the runs list (`agentloop ui`, `SQLiteJournal.query_runs`) and every run page's
summary (`read_window`) read each run's whole "end" entry into Python and parsed it to get its
`output`, so a run whose final answer was 32 MiB cost that (and its parsed copy) on every list
view, though the list shows 120 characters. SQLite now extracts the output and cuts it to 64 Ki
characters; a longer one comes back as that head and a note of what was left out.
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ui_clip import peak_of

from agentloop import Agent, SQLiteJournal
from agentloop.abc import Entry
from agentloop.testing import ScriptedModel, text
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio
BIG = 32 * 1024 * 1024
HEAD = 64 * 1024


async def journaled_run(path: str, run_id: str = "r") -> None:
    journal = SQLiteJournal(path)
    await Agent(client=ScriptedModel([text("done")]), journal=journal).run("go", run_id=run_id)
    journal.close()


def set_output(path: str, output: Any, run_id: str = "r") -> None:
    """Make the run's journaled final output `output` (a run whose answer was that)."""
    with sqlite3.connect(path) as db:
        (data,) = db.execute(
            "SELECT data FROM agentloop_entries WHERE run_id=? AND kind=?", (run_id, Entry.END)
        ).fetchone()
        value = json.loads(data)
        value["output"] = output
        db.execute(
            "UPDATE agentloop_entries SET data=? WHERE run_id=? AND kind=?",
            (json.dumps(value).encode(), run_id, Entry.END),
        )


async def test_a_32_mib_final_output_costs_the_runs_list_and_run_page_a_bounded_read(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    app = create_app(path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            # first-call costs (templates, imports) out of the measure, before the output is made
            # big: each request over the 32 MiB entry costs ~1 s of CPU in SQLite (the app caches
            # no page: every request below reads the journal as it is then)
            await c.get("/")
            await c.get("/runs/r")
            set_output(path, "<b>" + "x" * BIG)
            listed, list_peak = await peak_of(c, "/")
            page, page_peak = await peak_of(c, "/runs/r")
            found = await c.get("/", params={"q": "<b>xxx"})  # the search still reads the whole output
    assert listed.status_code == 200 and page.status_code == 200
    # the whole entry read and parsed costs > 64 MiB
    assert list_peak < BIG // 8 and page_peak < BIG // 4, (list_peak, page_peak)
    assert "go" in listed.text and "/runs/r" in listed.text
    assert "/runs/r" in found.text


async def test_query_runs_gives_a_long_output_as_its_head_and_what_was_left_out(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_output(path, "é" * (HEAD + 10))  # characters, not bytes
    journal = SQLiteJournal(path)
    try:
        tracemalloc.start()
        try:
            (summary,) = (await journal.query_runs()).runs
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (
            summary.output
            == "é" * HEAD + "\n… [10 more characters not shown; the journal holds the whole output]"
        )
        assert peak < 4 * HEAD * 4, peak
        set_output(path, {"items": ["y" * 100] * 1000})  # structured output, ~100 KiB of JSON
        (summary,) = (await journal.query_runs()).runs
        assert isinstance(summary.output, str) and summary.output.startswith('{"items":["yyy')
        assert "more characters not shown" in summary.output
    finally:
        journal.close()


@pytest.mark.parametrize(
    ("output", "shown"),
    [
        (
            "a\x00b" + "x" * HEAD,
            "a\x00b"
            + "x" * (HEAD - 3)
            + "\n… [3 more characters not shown; the journal holds the whole output]",
        ),
        (
            "\\u0000\x00" + "y" * HEAD,
            "\\u0000\x00"
            + "y" * (HEAD - 7)
            + "\n… [7 more characters not shown; the journal holds the whole output]",
        ),
    ],
)
async def test_a_nul_in_a_large_output_does_not_end_the_listed_text(
    tmp_path: Path, output: str, shown: str
) -> None:
    # json_extract returns a text only up to its first NUL: the output "a\x00b..." was listed as "a"
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_output(path, output)
    journal = SQLiteJournal(path)
    try:
        (summary,) = (await journal.query_runs()).runs
    finally:
        journal.close()
    assert summary.output == shown


async def test_a_damaged_end_entry_lists_the_run_with_no_output(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE agentloop_entries SET data=? WHERE kind=?", (b'{"output": "tr', Entry.END))
    journal = SQLiteJournal(path)
    try:
        (summary,) = (await journal.query_runs()).runs
    finally:
        journal.close()
    assert summary.run_id == "r" and summary.output is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(output=_JSON)
def test_an_output_within_the_bound_is_listed_exactly_as_stored(
    tmp_path_factory: pytest.TempPathFactory, output: Any
) -> None:
    path = str(tmp_path_factory.mktemp("out") / "j.db")

    async def main() -> tuple[Any, Any]:
        await journaled_run(path)
        set_output(path, output)
        journal = SQLiteJournal(path)
        try:
            (summary,) = (await journal.query_runs()).runs
            window = await journal.read_window("r", limit=5)
        finally:
            journal.close()
        return summary.output, window.summary.output

    listed, summarized = anyio.run(main)
    assert listed == output and type(listed) is type(output)
    assert summarized == output and type(summarized) is type(output)
