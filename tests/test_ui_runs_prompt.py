"""The runs list reads a run's prompt clipped by SQLite, never its whole header.

Regression: the runs list (`agentloop ui`, `SQLiteJournal.query_runs`) read each listed run's whole
journal header into Python and parsed it to find the prompt (the last user message it started
with), so a run started with a 32 MiB prompt (or a long conversation) cost that, and its parsed
copy, on every list view, though the list shows 120 characters. A header over 64 KiB now has its
prompt extracted and cut to 64 Ki characters by SQLite, as the final output already was.
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
from test_ui_runs_output import journaled_run

from agentloop import SQLiteJournal
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio
BIG = 8 * 1024 * 1024  # enough to tell: the whole header read and parsed costs > 16 MiB
HEAD = 64 * 1024
NOTE = "\n… [{:,} more characters not shown; the journal holds the whole prompt]"


def set_messages(path: str, messages: Any, run_id: str = "r") -> None:
    """Make the run's journaled header start it with `messages` (a run started that way)."""
    with sqlite3.connect(path) as db:
        (header,) = db.execute("SELECT header FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone()
        value = json.loads(header)
        value["messages"] = messages
        db.execute("UPDATE agentloop_runs SET header=? WHERE run_id=?", (json.dumps(value), run_id))


async def listed_prompt(path: str) -> tuple[str | None, int]:
    journal = SQLiteJournal(path)
    try:
        tracemalloc.start()
        try:
            (summary,) = (await journal.query_runs()).runs
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        journal.close()
    return summary.prompt, peak


async def test_a_huge_prompt_costs_the_runs_list_a_bounded_read(tmp_path: Path) -> None:
    """The exact repro (32 MiB there, 8 here for the suite's time): the list page and query_runs stay small."""
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_messages(path, [{"role": "user", "content": "<b>" + "x" * BIG}])
    prompt, peak = await listed_prompt(path)
    assert prompt == "<b>" + "x" * (HEAD - 3) + NOTE.format(BIG + 3 - HEAD)
    assert peak < 4 * HEAD * 4, peak  # the whole header read and parsed: > 16 MiB
    app = create_app(path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            await c.get("/")  # first-call costs (templates, imports) out of the measure
            listed, list_peak = await peak_of(c, "/")
            found = await c.get("/", params={"q": "<b>xxx"})  # the search still reads the whole header
    assert listed.status_code == 200 and list_peak < BIG // 8, list_peak
    assert "&lt;b&gt;xxx" in listed.text and "/runs/r" in listed.text
    assert "/runs/r" in found.text


async def test_the_last_user_message_of_a_long_conversation_is_the_prompt(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    long_history = [{"role": "system", "content": "s" * (2 * HEAD)}, {"role": "user", "content": "first"}]
    set_messages(
        path, [*long_history, {"role": "assistant", "content": "a"}, {"role": "user", "content": "é" * 10}]
    )
    assert (await listed_prompt(path))[0] == "é" * 10
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}]
    set_messages(path, [*long_history, {"role": "user", "content": parts}])
    assert (await listed_prompt(path))[0] == json.dumps(parts, separators=(",", ":"))
    set_messages(path, [*long_history[:1], {"role": "assistant", "content": "no user"}])
    assert (await listed_prompt(path))[0] is None


async def test_a_nul_in_a_large_headers_prompt_does_not_end_the_shown_text(tmp_path: Path) -> None:
    """Found by the property below: the prompt "\\x00" of a large header was listed as "" (SQLite's
    json_extract returns a text only up to its first NUL)."""
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_messages(
        path, [{"role": "system", "content": "s" * (2 * HEAD)}, {"role": "user", "content": "a\x00b"}]
    )
    assert (await listed_prompt(path))[0] == "a\x00b"


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ("\\u0000 is text, \x00 is not", "\\u0000 is text, \x00 is not"),  # a backslash, then "u0000"
        ("\\\x00\\", "\\\x00\\"),
        ("\x00" * 3 + "😀é", "\x00" * 3 + "😀é"),
        # longer than the head: cut at HEAD characters, the count exact (a NUL is one character)
        ("\x00" * (HEAD + 5), "\x00" * HEAD + NOTE.format(5)),
        ("é\x00" * HEAD, "é\x00" * (HEAD // 2) + NOTE.format(HEAD)),
    ],
)
async def test_a_large_headers_prompt_with_nul_is_shown_whole_or_cut_exactly(
    tmp_path: Path, content: str, shown: str
) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_messages(
        path, [{"role": "system", "content": "s" * (2 * HEAD)}, {"role": "user", "content": content}]
    )
    assert (await listed_prompt(path))[0] == shown


async def test_before_sqlite_3_38_a_nul_still_ends_the_shown_prompt_and_nothing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `t -> path` (a value's JSON text, NUL escaped) came with SQLite 3.38: without it the list
    # shows the text up to its NUL, as before, rather than failing on the operator
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    set_messages(
        path, [{"role": "system", "content": "s" * (2 * HEAD)}, {"role": "user", "content": "a\x00b"}]
    )
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    assert (await listed_prompt(path))[0] == "a"


async def test_a_damaged_large_header_lists_the_run_without_a_prompt(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await journaled_run(path)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE agentloop_runs SET header=?", ('{"messages": [{"role": "user", "content": "' + "x" * BIG,)
        )
    prompt, _ = await listed_prompt(path)
    assert prompt is None


CONTENT = st.one_of(
    # NUL: json_extract's text ends at it (test_a_nul_in_a_large_headers_prompt_does_not_end_...);
    # a backslash: "\\u0000" as text must not be taken for one
    st.text(st.sampled_from('a\x00\\u0é\U0001f600\x01"') | st.characters(), max_size=30),
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.lists(st.dictionaries(st.sampled_from(["type", "text"]), st.text(max_size=5), max_size=2), max_size=2),
)


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(contents=st.lists(CONTENT, min_size=1, max_size=3), pad=st.booleans())
def test_a_large_header_lists_the_same_prompt_as_a_small_one(
    tmp_path_factory: pytest.TempPathFactory, contents: list[Any], pad: bool
) -> None:
    """SQLite's reading of a large header (padded past 64 KiB) agrees with Python's of a small one."""
    path = str(tmp_path_factory.mktemp("p") / "j.db")
    users = [{"role": "user", "content": c} for c in contents]
    system = [{"role": "system", "content": "s" * (HEAD + 1)}] if pad else []

    async def main() -> tuple[Any, Any]:
        await journaled_run(path)
        set_messages(path, users)
        small, _ = await listed_prompt(path)
        set_messages(path, [*system, *users, {"role": "assistant", "content": "x" * HEAD}])
        large, _ = await listed_prompt(path)
        return small, large

    small, large = anyio.run(main)
    assert large == small
