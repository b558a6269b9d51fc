"""The SQLite journal's file: its schema, format and version, and opening it (read-write or read-only).

Kept apart from `sqlite.py` (what `SQLiteJournal` does with a connection) so that the file format
is read in one place.
"""

from __future__ import annotations

import errno
import os
import pathlib
import sqlite3

from .._exceptions import JournalCorruptError, JournalError, JournalWriteError
from .journal_errors import rollback, typed_error

__all__ = ["open_file", "open_read_only"]

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
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS agentloop_runs_newest ON agentloop_runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS agentloop_runs_status ON agentloop_runs (status, created_at, run_id)",
)


def open_file(path: str, durability: str) -> sqlite3.Connection:
    """A read-write connection to the journal at `path`, created (schema, meta) when new."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        head = b""
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise JournalWriteError(f"cannot open journal {path}: the disk is full ({e})") from None
        raise JournalError(f"cannot open journal {path}: {e}") from None
    if head and head != b"SQLite format 3\x00":
        raise JournalCorruptError(
            f"{path} is not a SQLite database, so not an agentloop journal; pass the path of a "
            "journal or of a file that does not exist yet"
        )
    try:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise JournalError(f"cannot open journal {path}: {e}") from None
    try:
        _prepare(conn, path, durability)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        rollback(conn)
        conn.close()
        raise typed_error(path, e) from None
    except BaseException:
        conn.close()
        raise
    return conn


def open_read_only(path: str) -> sqlite3.Connection:
    """A mode=ro connection; the caller closes it after each read."""
    # A fresh connection for every read: a long-lived mode=ro connection was seen to keep an
    # old view of the file after a writer in another process closed (and reset the WAL).
    # Opening one costs a fraction of a millisecond.
    if not os.path.exists(path):
        raise JournalError(f"no journal at {path}; pass the path of an existing journal")
    uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None, check_same_thread=False)
        meta = dict(conn.execute("SELECT key, value FROM agentloop_meta").fetchall())
    except (sqlite3.Error, UnicodeDecodeError) as e:  # SQLite's message can quote damaged bytes
        raise JournalCorruptError(f"{path} cannot be read as an agentloop journal: {e}") from None
    if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        conn.close()
        raise JournalCorruptError(f"{path} is not an agentloop journal of version {_VERSION}")
    return conn


def _prepare(conn: sqlite3.Connection, path: str, durability: str) -> None:
    """WAL, the durability, the schema of a new file; then the file's format and version checked."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
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
            f"{path} is a SQLite database but not an agentloop journal (its tables: "
            f"{', '.join(sorted(tables))}); pass another path"
        )
    meta = dict(conn.execute("SELECT key, value FROM agentloop_meta").fetchall())
    if meta.get("format") != _FORMAT:
        raise JournalCorruptError(f"{path} is not an agentloop journal (format {meta.get('format')!r})")
    if meta.get("version") != _VERSION:
        raise JournalCorruptError(
            f"{path} is an agentloop journal of version {meta.get('version')!r}; this agentloop "
            f"reads version {_VERSION}. Use the agentloop version that wrote it."
        )
