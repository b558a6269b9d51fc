"""Journal failures are typed and honest (issue #15).

- any damage to a journal file → `JournalCorruptError` (or a run that still replays), never a raw
  `UnicodeDecodeError` (5 of 40 random corruptions raised one before);
- a full disk → `JournalWriteError` saying "disk full", the journal intact, the lease released:
  the same process resumes the run once space is freed (it got `RunLockedError` before). Tested
  on a real 1 MiB tmpfs, mounted in a private mount namespace of a subprocess.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    AgentloopError,
    JournalCorruptError,
    JournalError,
    JournalWriteError,
    SQLiteJournal,
    ToolRegistry,
)
from agentloop.testing import ScriptedModel, call, error, text, tool_calls

WORKER = Path(__file__).with_name("disk_full_worker.py")

tools = ToolRegistry()


@tools.tool
def fetch(order: str) -> str:
    """Fetch an order."""
    return f"order {order}: ok"


def script() -> list:
    return [
        tool_calls(call("fetch", {"order": "1"}, id="a")),
        tool_calls(call("fetch", {"order": "2"}, id="b")),
        text("done"),
    ]


@pytest.fixture(scope="module")
def real_journal(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real journal: one finished run and one interrupted after its first tool."""
    import anyio

    path = tmp_path_factory.mktemp("journal") / "runs.db"

    async def make() -> None:
        journal = SQLiteJournal(path)
        await Agent(client=ScriptedModel(script()), tools=tools, journal=journal).run("hi", run_id="done")
        try:
            cut = [*script()[:1], error(500, "the router is down")]
            await Agent(client=ScriptedModel(cut), tools=tools, journal=journal).run("hi", run_id="cut")
        except AgentloopError:
            pass  # the model failed after the first step: an interrupted run to resume
        journal.close()  # checkpoints the WAL into the file

    anyio.run(make)
    return path.read_bytes()


# --- corruption -------------------------------------------------------------------------------------

_paths = itertools.count()


@pytest.mark.anyio
@settings(
    max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_random_corruption_is_a_typed_error(
    real_journal: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    damaged = bytearray(real_journal)
    for _ in range(data.draw(st.integers(1, 20), label="flips")):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans(), label="truncate"):
        del damaged[data.draw(st.integers(0, len(damaged))) :]
    path = tmp_path / f"damaged{next(_paths)}.db"
    path.write_bytes(damaged)
    journal = SQLiteJournal(path)
    try:
        for run_id in ("done", "cut"):
            try:  # each ends in a result or a typed error; anything else fails the test
                await Agent(client=ScriptedModel([text("done")] * 3), tools=tools, journal=journal).resume(
                    run_id
                )
            except AgentloopError:
                pass
        try:
            await journal.list_runs()
        except AgentloopError:
            pass
    finally:
        journal.close()


@pytest.mark.anyio
async def test_damage_sqlite_reports_in_bytes_that_are_not_utf8(real_journal: bytes, tmp_path: Path) -> None:
    """The exact shape of the issue's `UnicodeDecodeError`: SQLite's error message quotes damaged
    bytes (here a table name in the schema), and decoding the message itself failed."""
    path = tmp_path / "schema.db"
    path.write_bytes(real_journal)
    db = sqlite3.connect(path)
    db.execute("PRAGMA writable_schema=ON")
    db.execute(
        "UPDATE sqlite_master SET name = CAST(X'61E4E4' AS TEXT), sql = 'CREATE TABLE' WHERE name='agentloop_runs'"
    )
    db.commit()
    db.close()
    journal = SQLiteJournal(path)
    with pytest.raises(JournalCorruptError, match="damaged"):
        await Agent(client=ScriptedModel([text("done")]), tools=tools, journal=journal).resume("cut")
    with pytest.raises(JournalCorruptError, match="damaged"):
        await journal.list_runs()


@pytest.mark.anyio
async def test_text_values_that_are_not_utf8_are_corruption(real_journal: bytes, tmp_path: Path) -> None:
    for table, column in (
        ("agentloop_runs", "status"),
        ("agentloop_meta", "value"),
        ("agentloop_runs", "header"),
    ):
        path = tmp_path / f"{table}-{column}.db"
        path.write_bytes(real_journal)
        with sqlite3.connect(path) as db:
            db.execute(f"UPDATE {table} SET {column} = CAST(X'E4E4E4' AS TEXT)")
        journal = SQLiteJournal(path)
        with pytest.raises(JournalCorruptError):
            await Agent(client=ScriptedModel([text("done")]), tools=tools, journal=journal).resume("cut")
        journal.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00garbage" * 100,
        "née, not a journal\n".encode("latin-1") * 50,
        b"SQLite format 3\x00" + b"\xe4" * 4000,
    ],
    ids=["binary", "latin-1 text", "sqlite header then garbage"],
)
async def test_opening_what_is_not_a_journal_is_corruption(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(JournalCorruptError):
        await SQLiteJournal(path).list_runs()
    with pytest.raises(JournalCorruptError):
        await Agent(client=ScriptedModel([text("done")]), journal=SQLiteJournal(path)).resume("r1")


# --- a full disk, for real ----------------------------------------------------------------------------


def _run_worker(tmp_path: Path, backend: str) -> dict:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare (a private mount namespace for the tmpfs)")
    mount_dir = tmp_path / "mnt"
    mount_dir.mkdir()
    proc = subprocess.run(
        [unshare, "-m", "--propagation", "private", sys.executable, str(WORKER), str(mount_dir), backend],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "mount:" in proc.stderr):
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_disk_full_is_a_write_error_and_the_same_process_resumes(tmp_path: Path, backend: str) -> None:
    """Issue #15: a full disk was reported as "damaged", and the lease stayed held (RunLockedError)."""
    seen = _run_worker(tmp_path, backend)
    assert seen["first"] == "JournalWriteError", seen
    assert "disk is full" in seen["message"] and "Agent.resume" in seen["message"]
    assert seen["entries"] == ["model", "tool_start"]  # intact: everything committed before the failure
    assert seen["resumed"] == "done"  # the lease was released: this same process continued the run
    # An I/O error that is not a full disk (the file system remounted read-only): also a write
    # error, and it does not claim the disk is full.
    assert seen["read_only"].startswith("JournalWriteError: ") and "disk is full" not in seen["read_only"]


def test_journal_write_error_is_a_journal_error() -> None:
    assert issubclass(JournalWriteError, JournalError) and not issubclass(
        JournalWriteError, JournalCorruptError
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["tool_start", "tool_end"])
async def test_a_tool_entry_without_its_call_id_is_corruption(
    real_journal: bytes, tmp_path: Path, kind: str
) -> None:
    # mypy found it: replay filed a tool entry whose call_id column is NULL under the key None,
    # so the damaged journal replayed as if that call had never started (and ran it again).
    path = tmp_path / f"{kind}.db"
    path.write_bytes(real_journal)
    with sqlite3.connect(path) as db:
        changed = db.execute(
            "UPDATE agentloop_entries SET call_id = NULL WHERE run_id = 'cut' AND kind = ?", (kind,)
        ).rowcount
    assert changed > 0
    journal = SQLiteJournal(path)
    try:
        with pytest.raises(JournalCorruptError, match="no call id"):
            await Agent(client=ScriptedModel([text("done")] * 3), tools=tools, journal=journal).resume("cut")
    finally:
        journal.close()
