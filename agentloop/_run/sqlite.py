"""`SQLiteJournal`: a `Journal` in one SQLite file (stdlib sqlite3, WAL), usable by many processes.

The file's schema and opening are in `sqlite_file.py`; leases (who runs a run) in `lease.py`;
paging the runs list in `journal_query.py`. What the entries mean is in `recorder.py`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
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
from . import journal_query as _q
from . import lease as _lease
from .journal import Journal, JournaledRun, JournalEntry, RunInfo
from .journal_errors import rollback, typed_error
from .journal_query import RunPage, RunSummary, RunWindow, query_runs, status_group, summarize
from .sqlite_file import open_file, open_read_only

__all__ = ["SQLiteJournal"]

T = TypeVar("T")


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
        self.lease_ttl = _lease.checked_ttl(lease_ttl)
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
            except BaseException:  # e.g. RunLockedError, a lease row found damaged: nothing stays open
                rollback(conn)  # (an open transaction failed the next run's BEGIN as "damaged")
                raise
            finally:
                if self.read_only:  # see _open_read_only
                    conn.close()
                    self._conn = None

    def _open(self) -> sqlite3.Connection:
        conn = open_read_only(self.path) if self.read_only else open_file(self.path, self.durability)
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
        return token in self._tokens.values() or self._alive(column, pid, expires_at)

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
        return self._snapshot(conn, run_id, False)[0]

    def _snapshot(
        self, conn: sqlite3.Connection, run_id: str, with_summary: bool = True
    ) -> tuple[JournaledRun, RunSummary | None]:
        conn.execute("BEGIN")  # one consistent snapshot: the run, its entries (its summary, its lease)
        try:
            row = self._run_row(conn, run_id)
            rows = conn.execute(
                "SELECT seq, kind, step, call_id, data, at FROM agentloop_entries WHERE run_id=? ORDER BY seq",
                (run_id,),
            ).fetchall()
            summary = summarize(conn, [row], self._alive)[0] if with_summary else None
        finally:
            conn.rollback()
        return self._decoded(run_id, row, rows), summary

    def _run_row(self, conn: sqlite3.Connection, run_id: str) -> Any:
        row = conn.execute(f"SELECT {_INFO}, header FROM agentloop_runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in journal {self.path}; `agentloop runs list` shows the runs"
            )
        return row

    def _decoded(self, run_id: str, row: Any, rows: list[Any]) -> JournaledRun:
        try:
            header = _json.loads(row[6])
            entries = [JournalEntry(s, k, st, c, _q.entry_data(d), at) for s, k, st, c, d, at in rows]
        except ValueError as e:
            raise JournalCorruptError(
                f"run {run_id!r} in journal {self.path} has damaged data: {e}"
            ) from None
        return JournaledRun(RunInfo(*row[:6]), header, entries)

    def _alive(self, host: str, pid: int, expires_at: float) -> bool:
        _lease.check_row(self.path, host, pid, expires_at)
        here = _lease.alive_here(_lease.parse(host, pid))  # see lease.py: boot id + pid + start time
        return expires_at > time.time() if here is None else here

    def _query(
        self, conn: sqlite3.Connection, status: str | None, search: str | None, limit: int, after: Any
    ) -> RunPage:
        return query_runs(
            conn, statuses=status_group(status), search=search, limit=limit, after=after, alive=self._alive
        )

    def _summary(self, conn: sqlite3.Connection, run_id: str) -> RunSummary:
        conn.execute("BEGIN")  # the run's row, its counts and its lease from one snapshot
        try:
            return summarize(conn, [self._run_row(conn, run_id)], self._alive)[0]
        finally:
            conn.rollback()

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

    async def load_with_summary(self, run_id: str) -> tuple[JournaledRun, RunSummary]:
        """`load` and `run_summary` of one run read in one transaction: the summary's status and
        lease belong to exactly the entries returned (two calls can straddle a writer's commit)."""
        run, summary = await self._call(self._snapshot, run_id)
        assert summary is not None
        return run, summary

    async def read_window(
        self, run_id: str, *, first: int = 1, limit: int = 0, tail: int = 0, counted: int = 0,
        max_entry_bytes: int = 0,
    ) -> RunWindow:  # fmt: skip
        """Entries `first <= seq < first + limit` of a run, its last `tail` entries and its summary
        (counting the entries after `counted`), read in one transaction (`RunNotFoundError`).
        `max_entry_bytes` (0: no bound): an entry stored larger comes back unparsed, as
        `{"$clipped": {"bytes": N, "head": its first 64 KiB}}` (never a `paused` or `approvals` one)."""
        return await self._call(self._window, run_id, first, limit, tail, counted, max_entry_bytes)

    async def change_marker(self) -> str:
        """A short text that changes whenever a run is added, deleted, appended to, or taken up or
        left by a process: what a live runs list (a text search) compares before it searches again."""
        return await self._call(_q.change_marker, self._alive)

    def _window(self, conn: sqlite3.Connection, run_id: str, *args: int) -> RunWindow:
        conn.execute("BEGIN")
        try:
            row = self._run_row(conn, run_id)
            rows, tail, last, summary = _q.window_rows(conn, row, self._alive, *args)
        finally:
            conn.rollback()
        run = self._decoded(run_id, row, rows)
        return RunWindow(run, summary, last, self._decoded(run_id, (*row[:6], "{}"), tail).entries)

    # Synchronous forms, for tools and the CLI (no event loop needed).
    def load_sync(self, run_id: str) -> JournaledRun:
        return self._locked(self._load, run_id)

    def list_runs_sync(self) -> list[RunInfo]:
        return self._locked(self._list)

    def delete_sync(self, run_id: str) -> None:
        self._locked(self._delete, run_id)


_INFO = "run_id, status, model, steps, created_at, updated_at"
_INFO_R = ", ".join(f"r.{c}" for c in _INFO.split(", "))
