"""Durable runs: the `Journal` interface, its replay, and `SQLiteJournal` (stdlib sqlite3, WAL).

With `Agent(journal=...)` every run is journaled under its `run_id`, and each of these is
committed before the loop moves on: the run's start (its conversation), every model answer (ids
repaired), the start of every tool call (right before the tool runs), every tool outcome, an
approval pause and the decisions, the end. `Agent.resume(run_id)` replays the journal and goes
on from where it stops:

- journaled model answers are not requested again;
- finished tool calls are not run again: their journaled results are used;
- a call that started but did not finish (the process died while it ran) is run again only if
  its tool was registered with `idempotent=True`; otherwise it is not run, and the model gets a
  tool result saying its outcome is unknown (status `outcome_unknown`);
- calls that had not started run normally; a finished run is returned as it is.

One process at a time: a run is leased to the process that runs or resumes it. A second
`resume` of the same run while the first is alive raises `RunLockedError`. The lease of a
process that died (same machine: the process is gone, at once; another machine: `lease_ttl`
seconds without a journal write) is taken over. Holders are named by boot id, pid and process
start time, not by host name (see `_lease.py`).
"""

from __future__ import annotations

import errno
import os
import pathlib
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from secrets import token_hex
from typing import Any, Literal, TypeVar

import anyio

from .. import _json
from .._exceptions import (
    JournalCorruptError,
    JournalError,
    JournalWriteError,
    RunLockedError,
    RunNotFoundError,
)
from .._types import PendingCall, ToolCallRecord, Usage
from . import lease as _lease
from .approval import Decision, decision_from_data
from .conversation import history_message
from .journal_errors import rollback, typed_error
from .journal_query import (
    RunPage,
    RunSummary,
    default_query,
    query_runs,
    status_group,
    summarize,
)

__all__ = [
    "Journal",
    "SQLiteJournal",
    "JournaledRun",
    "JournalEntry",
    "RunInfo",
    "Replay",
    "replay",
    "RunSummary",
    "RunPage",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    kind: str  # "model" | "message" | "tool_start" | "tool_end" | "paused" | "approvals" | "handoff" | "end"
    step: int
    call_id: str | None
    data: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    status: str  # "running", "interrupted" (listed: its process is gone), "paused", or its stop reason
    model: str | None
    steps: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class JournaledRun:
    info: RunInfo
    header: dict[str, Any]  # {"model", "messages": the conversation the run started with}
    entries: list[JournalEntry]


class Journal(ABC):
    """Where durable runs are committed. Every method commits before it returns."""

    @abstractmethod
    async def create(self, run_id: str, header: dict[str, Any]) -> str:
        """Journal a new run and lease it to the caller; return the lease token."""

    @abstractmethod
    async def acquire(self, run_id: str) -> str:
        """Lease an existing run (`RunNotFoundError`, `RunLockedError`); return the token."""

    @abstractmethod
    async def release(self, run_id: str, token: str) -> None: ...

    @abstractmethod
    async def append(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        step: int = 0,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        """Commit one entry (and the run's new status, if given)."""

    @abstractmethod
    async def load(self, run_id: str) -> JournaledRun: ...

    @abstractmethod
    async def list_runs(self) -> list[RunInfo]: ...

    @abstractmethod
    async def delete(self, run_id: str) -> None: ...

    async def query_runs(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        limit: int = 50,
        after: tuple[float, str] | None = None,
    ) -> RunPage:
        """One page of runs, newest first (what `agentloop ui` lists).

        `status`: a group of `STATUS_GROUPS` ("final", "paused", "interrupted", "failed",
        "step_limit", "other_limit"); `search`: text in the run's prompt or final output
        (case-insensitive; SQLite folds ASCII letters only);
        `after`: the `cursor` of the previous page. This default reads every run (fine for
        small journals); `SQLiteJournal` answers it with indexed SQL.
        """
        return await default_query(self, status=status, search=search, limit=limit, after=after)


# --- replay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Replay:
    """A journaled run rebuilt: the conversation so far and the state of its last step."""

    messages: list[dict[str, Any]]
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    turns: list[tuple[str, Usage]] = field(default_factory=list)  # (model, usage) of each answer
    tool_calls: list[ToolCallRecord] = field(default_factory=list)  # of the closed steps
    calls: list[dict[str, Any]] | None = None  # the last step's calls when it is not closed
    records: dict[str, ToolCallRecord] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    pending: list[PendingCall] = field(default_factory=list)
    approvals: dict[str, Decision] = field(default_factory=dict)
    final: tuple[str, str | None] | None = None  # (stop_reason, output)
    ended: bool = False  # the "end" entry is there (a crash can come between the final answer and it)
    final_data: Any = None  # a structured output's JSON data ("output_data"), when there is one
    has_final_data: bool = False
    agent: str | None = None  # the agent a handoff passed the run to (the last one)


def replay(run: JournaledRun) -> Replay:
    try:
        return _replay(run)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise JournalCorruptError(
            f"run {run.info.run_id!r}: the journal entries cannot be replayed ({type(e).__name__}: {e}); "
            "the journal was modified or damaged"
        ) from None


def _call_id(entry: JournalEntry) -> str:
    """The call a tool entry is about; one without (a damaged row) cannot be replayed (ValueError)."""
    if entry.call_id is None:
        raise ValueError(f"a {entry.kind} entry has no call id")
    return entry.call_id


def _replay(run: JournaledRun) -> Replay:
    r = Replay(messages=list(run.header["messages"]))
    for e in run.entries:
        d = e.data
        if e.kind == "model":
            _close_step(r)
            message = d["message"]  # as the model sent it: the calls are rerun from their raw arguments
            r.messages.append(history_message(message))
            r.steps = e.step
            usage = Usage.from_data(d["usage"])
            r.usage = r.usage + usage
            if "model" in d:
                r.turns.append((d["model"], usage))
            r.calls = message.get("tool_calls") or None
        elif e.kind == "message":  # a message the loop itself added (output-validation feedback)
            _close_step(r)
            r.calls = None
            r.messages.append(d["message"])
        elif e.kind == "handoff":  # the conversation the agent handed to starts from (filtered)
            _close_step(r)
            r.messages, r.agent = list(d["messages"]), d["agent"]
        elif e.kind == "tool_start":
            r.started.add(_call_id(e))
        elif e.kind == "tool_end":
            call_id = _call_id(e)
            r.records[call_id] = ToolCallRecord(call_id, step=e.step, **d)
        elif e.kind == "paused":
            r.pending = [PendingCall(**p) for p in d["pending"]]
        elif e.kind == "approvals":
            r.approvals.update({k: decision_from_data(v) for k, v in d.items()})
        elif e.kind == "end":
            if r.calls and all(c["id"] in r.records for c in r.calls):
                _close_step(r)  # a run that ended on a tool step (the final_result tool)
            r.final = (d["stop_reason"], d["output"])
            if "output_data" in d:  # a structured output: "output" is its JSON text, this its data
                r.final_data, r.has_final_data = d["output_data"], True
            r.ended = True
    last = r.messages[-1] if r.steps else None
    if r.final is None and last is not None and last.get("role") == "assistant" and not r.calls:
        r.final = ("final", last.get("content"))  # the final answer was committed, its "end" was not
    r.started -= r.records.keys()
    r.pending = [p for p in r.pending if p.id not in r.records]
    return r


def _close_step(r: Replay) -> None:
    if not r.calls:
        return
    records = [r.records[c["id"]] for c in r.calls]  # KeyError: a step moved on without an outcome
    r.tool_calls.extend(records)
    r.messages.extend({"role": "tool", "tool_call_id": x.id, "content": x.content} for x in records)
    r.calls, r.records, r.started, r.pending, r.approvals = None, {}, set(), [], {}


# --- SQLite -----------------------------------------------------------------------------------

_FORMAT = "agentloop-journal"
_VERSION = "1"
_SCHEMA = """
CREATE TABLE agentloop_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE agentloop_runs (
    run_id TEXT PRIMARY KEY, status TEXT NOT NULL, model TEXT, steps INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, header TEXT NOT NULL);
CREATE TABLE agentloop_entries (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, step INTEGER NOT NULL,
    call_id TEXT, data TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE agentloop_leases (
    run_id TEXT PRIMARY KEY, token TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    expires_at REAL NOT NULL);
"""


class SQLiteJournal(Journal):
    """A `Journal` in one SQLite file (WAL mode), usable by many processes at once.

    Writes run in anyio worker threads, one at a time per journal object, so the event loop
    never waits on the disk. `durability="normal"` (the default) survives the process being
    killed (kill -9) at any point; `"full"` also survives power loss, at the cost of an fsync
    per commit. `lease_ttl`: seconds after which another host may take over a run whose
    process stopped writing (on the same host a dead pid is detected at once).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["normal", "full"] = "normal",
        lease_ttl: float = 60.0,
        read_only: bool = False,
    ) -> None:
        if durability not in ("normal", "full"):
            raise JournalError(f"durability must be 'normal' or 'full', got {durability!r}")
        self.path = os.fspath(path)
        self.durability = durability
        self.lease_ttl = lease_ttl
        self.read_only = read_only  # opened with SQLite's mode=ro: reads never block or change the file
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement sequence at a time on the connection
        self._tokens: dict[str, str] = {}
        # Leases this object released whose delete could not be written (disk full): free for it to retake.
        self._abandoned: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SQLiteJournal({self.path!r})"

    # --- plumbing -----------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(partial(self._locked, fn, *args))

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            conn = self._conn or self._open()
            try:
                return fn(conn, *args)
            except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
                rollback(conn)
                if self.read_only and isinstance(e, sqlite3.OperationalError) and "readonly" in str(e):
                    raise JournalError(
                        f"journal {self.path} was opened read-only; it cannot be written: {e}"
                    ) from None
                raise typed_error(self.path, e) from None
            finally:
                if self.read_only:  # see _open_read_only
                    conn.close()
                    self._conn = None

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            return self._open_read_only()
        try:
            with open(self.path, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            head = b""
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise JournalWriteError(f"cannot open journal {self.path}: the disk is full ({e})") from None
            raise JournalError(f"cannot open journal {self.path}: {e}") from None
        if head and head != b"SQLite format 3\x00":
            raise JournalCorruptError(
                f"{self.path} is not a SQLite database, so not an agentloop journal; pass the path of a "
                "journal or of a file that does not exist yet"
            )
        try:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO agentloop_meta VALUES (?, ?)", [("format", _FORMAT), ("version", _VERSION)]
                )
                tables = {"agentloop_meta", "agentloop_runs"}
            if "agentloop_runs" in tables:  # the runs list's order (added later: older files get them here)
                conn.execute(_INDEXES[0])
                conn.execute(_INDEXES[1])
            conn.execute("COMMIT")
            if "agentloop_meta" not in tables:
                raise JournalCorruptError(
                    f"{self.path} is a SQLite database but not an agentloop journal (its tables: "
                    f"{', '.join(sorted(tables))}); pass another path"
                )
            meta = dict(conn.execute("SELECT key, value FROM agentloop_meta").fetchall())
            if meta.get("format") != _FORMAT:
                raise JournalCorruptError(
                    f"{self.path} is not an agentloop journal (format {meta.get('format')!r})"
                )
            if meta.get("version") != _VERSION:
                raise JournalCorruptError(
                    f"{self.path} is an agentloop journal of version {meta.get('version')!r}; this agentloop "
                    f"reads version {_VERSION}. Use the agentloop version that wrote it."
                )
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            rollback(conn)
            conn.close()
            raise typed_error(self.path, e) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        # A fresh connection for every read: a long-lived mode=ro connection was seen to keep an
        # old view of the file after a writer in another process closed (and reset the WAL).
        # Opening one costs a fraction of a millisecond.
        if not os.path.exists(self.path):
            raise JournalError(f"no journal at {self.path}; pass the path of an existing journal")
        uri = pathlib.Path(self.path).absolute().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None, check_same_thread=False)
            meta = dict(conn.execute("SELECT key, value FROM agentloop_meta").fetchall())
        except (sqlite3.Error, UnicodeDecodeError) as e:  # SQLite's message can quote damaged bytes
            raise JournalCorruptError(f"{self.path} cannot be read as an agentloop journal: {e}") from None
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            conn.close()
            raise JournalCorruptError(f"{self.path} is not an agentloop journal of version {_VERSION}")
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- leases -------------------------------------------------------------------------------

    def _holder_alive(self, token: str, column: str, pid: int, expires_at: float) -> bool:
        if token in self._tokens.values():
            return True
        here = _lease.alive_here(_lease.parse(column, pid))
        return expires_at > time.time() if here is None else here

    def _take_lease(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute(
            "SELECT token, host, pid, expires_at FROM agentloop_leases WHERE run_id=?", (run_id,)
        ).fetchone()
        if row is not None:
            # a lease this object could not delete (a failed write) is ours to take back
            if self._holder_alive(*row) and self._abandoned.get(run_id) != row[0]:
                holder = _lease.parse(row[1], row[2])
                raise RunLockedError(
                    f"run {run_id!r} is being run by another process or task (pid {holder.pid} on {holder.host}); "
                    "two cannot continue one run at once. Wait for it to finish, or stop it and resume again."
                )
            conn.execute("DELETE FROM agentloop_leases WHERE run_id=?", (run_id,))
        token = token_hex(8)
        me = _lease.me()
        conn.execute(
            "INSERT INTO agentloop_leases VALUES (?, ?, ?, ?, ?)",
            (run_id, token, me.column(), me.pid, time.time() + self.lease_ttl),
        )
        self._tokens[run_id] = token
        self._abandoned.pop(run_id, None)
        return token

    def _create(self, conn: sqlite3.Connection, run_id: str, header: dict[str, Any]) -> str:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone():
            conn.rollback()
            raise JournalError(
                f"run {run_id!r} is already in journal {self.path}; continue it with Agent.resume({run_id!r}) "
                "or start a new run with another run_id"
            )
        now = time.time()
        conn.execute(
            "INSERT INTO agentloop_runs VALUES (?, 'running', ?, 0, ?, ?, ?)",
            (run_id, header.get("model"), now, now, _json.dumps_str(header)),
        )
        token = self._take_lease(conn, run_id)
        conn.execute("COMMIT")
        return token

    def _acquire(self, conn: sqlite3.Connection, run_id: str) -> str:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone():
                raise RunNotFoundError(
                    f"no run {run_id!r} in journal {self.path}; `agentloop runs list` shows the runs"
                )
            token = self._take_lease(conn, run_id)
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")
        return token

    def _release(self, conn: sqlite3.Connection, run_id: str, token: str) -> None:
        if self._tokens.get(run_id) == token:
            del self._tokens[run_id]
        conn.execute("DELETE FROM agentloop_leases WHERE run_id=? AND token=?", (run_id, token))

    async def create(self, run_id: str, header: dict[str, Any]) -> str:
        return await self._call(self._create, run_id, header)

    async def acquire(self, run_id: str) -> str:
        return await self._call(self._acquire, run_id)

    async def release(self, run_id: str, token: str) -> None:
        """Give the lease up. Never raises for a write failure: it runs in the `finally` of a run
        that may be failing for that very reason (a full disk), and must not hide its error. The
        lease row then stays on disk, but this object knows it gave it up and retakes it."""
        try:
            await self._call(self._release, run_id, token)
        except (JournalWriteError, JournalCorruptError):
            self._abandoned[run_id] = token

    # --- entries ------------------------------------------------------------------------------

    def _append(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        kind: str,
        data: bytes,
        step: int,
        call_id: Any,
        status: Any,
    ) -> None:
        now = time.time()
        token = self._tokens.get(run_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "UPDATE agentloop_leases SET expires_at=? WHERE run_id=? AND token=?",
                (now + self.lease_ttl, run_id, token),
            )
            if cur.rowcount != 1:
                raise RunLockedError(
                    f"run {run_id!r}: this process no longer holds the run's lease (another process took the run "
                    "over); it stops writing to the journal"
                )
            conn.execute(
                "INSERT INTO agentloop_entries VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM agentloop_entries "
                "WHERE run_id=?), ?, ?, ?, ?, ?)",
                (run_id, run_id, kind, step, call_id, data, now),
            )
            conn.execute(
                "UPDATE agentloop_runs SET updated_at=?, steps=MAX(steps, ?), status=COALESCE(?, status) WHERE run_id=?",
                (now, step, status, run_id),
            )
        except BaseException:
            conn.rollback()
            raise
        self._commit(conn)

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    async def append(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        step: int = 0,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        payload = _json.dumps(data)  # encoded on the loop: a bad value fails here, not in the thread
        await self._call(self._append, run_id, kind, payload, step, call_id, status)

    # --- reading ------------------------------------------------------------------------------

    def _load(self, conn: sqlite3.Connection, run_id: str) -> JournaledRun:
        conn.execute("BEGIN")  # one consistent snapshot
        try:
            row = conn.execute(
                f"SELECT {_INFO}, header FROM agentloop_runs WHERE run_id=?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFoundError(
                    f"no run {run_id!r} in journal {self.path}; `agentloop runs list` shows the runs"
                )
            rows = conn.execute(
                "SELECT seq, kind, step, call_id, data, at FROM agentloop_entries WHERE run_id=? ORDER BY seq",
                (run_id,),
            ).fetchall()
        finally:
            conn.rollback()
        try:
            header = _json.loads(row[6])
            entries = [JournalEntry(s, k, st, c, _json.loads(d), at) for s, k, st, c, d, at in rows]
        except ValueError as e:
            raise JournalCorruptError(
                f"run {run_id!r} in journal {self.path} has damaged data: {e}"
            ) from None
        return JournaledRun(RunInfo(*row[:6]), header, entries)

    def _alive(self, host: str, pid: int, expires_at: float) -> bool:
        here = _lease.alive_here(_lease.parse(host, pid))  # see _lease.py: boot id + pid + start time
        return expires_at > time.time() if here is None else here

    def _query(
        self, conn: sqlite3.Connection, status: str | None, search: str | None, limit: int, after: Any
    ) -> RunPage:
        return query_runs(
            conn, statuses=status_group(status), search=search, limit=limit, after=after, alive=self._alive
        )

    def _summary(self, conn: sqlite3.Connection, run_id: str) -> RunSummary:
        row = conn.execute(f"SELECT {_INFO}, header FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in journal {self.path}; `agentloop runs list` shows the runs"
            )
        return summarize(conn, [row], self._alive)[0]

    def _list(self, conn: sqlite3.Connection) -> list[RunInfo]:
        rows = conn.execute(
            f"SELECT {_INFO_R}, l.token, l.host, l.pid, l.expires_at FROM agentloop_runs r "
            "LEFT JOIN agentloop_leases l ON l.run_id = r.run_id ORDER BY r.created_at, r.run_id"
        ).fetchall()
        runs = []
        for *info, token, column, pid, expires_at in rows:
            # 'running' is what the journal says until the run ends; with no live lease holder
            # the process that ran it was killed or the run failed: it waits for a resume.
            if info[1] == "running" and (
                token is None or not self._holder_alive(token, column, pid, expires_at)
            ):
                info[1] = "interrupted"
            runs.append(RunInfo(*info))
        return runs

    def _delete(self, conn: sqlite3.Connection, run_id: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone():
                raise RunNotFoundError(f"no run {run_id!r} in journal {self.path}")
            self._take_lease(conn, run_id)  # refuses a run that is being run
            for table in ("agentloop_entries", "agentloop_leases", "agentloop_runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            self._tokens.pop(run_id, None)
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    async def load(self, run_id: str) -> JournaledRun:
        return await self._call(self._load, run_id)

    async def list_runs(self) -> list[RunInfo]:
        return await self._call(self._list)

    async def delete(self, run_id: str) -> None:
        await self._call(self._delete, run_id)

    async def query_runs(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        limit: int = 50,
        after: tuple[float, str] | None = None,
    ) -> RunPage:
        return await self._call(self._query, status, search, limit, after)

    async def run_summary(self, run_id: str) -> RunSummary:
        """The `RunSummary` of one run (`RunNotFoundError`): counts, tokens, whether it is live."""
        return await self._call(self._summary, run_id)

    # Synchronous forms, for tools and the CLI (no event loop needed).
    def load_sync(self, run_id: str) -> JournaledRun:
        return self._locked(self._load, run_id)

    def list_runs_sync(self) -> list[RunInfo]:
        return self._locked(self._list)

    def delete_sync(self, run_id: str) -> None:
        self._locked(self._delete, run_id)


_INFO = "run_id, status, model, steps, created_at, updated_at"
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS agentloop_runs_newest ON agentloop_runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS agentloop_runs_status ON agentloop_runs (status, created_at, run_id)",
)
_INFO_R = ", ".join(f"r.{c}" for c in _INFO.split(", "))
