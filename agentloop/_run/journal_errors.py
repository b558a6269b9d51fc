"""A SQLite error → the journal error that says what happened, by SQLite's result code.

- a full disk (`SQLITE_FULL`, or an I/O error on a disk with no room left) → `JournalWriteError`
  saying "the disk is full";
- other I/O, permission and read-only failures → `JournalWriteError`;
- busy / locked → `JournalError` (another process held the file too long);
- everything else, and bytes that are not UTF-8 where SQLite or the journal expects text (SQLite's
  own error message can quote damaged bytes) → `JournalCorruptError`.

Nothing of a failed write is committed (each write is one transaction), so the journal is intact
up to it whichever error it was.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

from .._exceptions import JournalCorruptError, JournalError, JournalWriteError

__all__ = ["typed_error", "rollback"]

# SQLite primary result codes (sqlite3.h); Python gives them as `sqlite_errorcode` (3.11+).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOLFS = 10, 13, 14, 22
_SQLITE_IOERR_SHORT_READ = _SQLITE_IOERR | (2 << 8)
_IO_CODES = frozenset({_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_NOLFS})
_FULL_BELOW = 64 * 1024  # free bytes under which an I/O error is reported as a full disk


def typed_error(path: str, e: sqlite3.Error | UnicodeDecodeError) -> JournalError:
    if isinstance(e, UnicodeDecodeError):
        return JournalCorruptError(
            f"journal {path} is damaged or not an agentloop journal: it holds bytes that are not UTF-8 "
            f"text where text belongs ({e.reason}); restore it from a backup or pass another path"
        )
    extended = getattr(e, "sqlite_errorcode", None) or 0
    code = extended & 0xFF  # the primary result code
    if extended == _SQLITE_IOERR_SHORT_READ:  # the file is shorter than its own header says: truncated
        return JournalCorruptError(f"journal {path} is damaged (truncated): {e}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or (
        isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
    ):
        return JournalError(f"journal {path} stayed locked by another process: {e}")
    if code == _SQLITE_FULL or (code in _IO_CODES and _disk_full(path)):
        return JournalWriteError(
            f"journal {path}: the disk is full ({e}). The failed write was not committed and the journal "
            "is intact up to it; free disk space, then continue the run with Agent.resume(run_id)."
        )
    if code in _IO_CODES:
        return JournalWriteError(
            f"journal {path} could not be written (I/O error: {e}); the failed write was not committed. "
            "Check the disk and the file's permissions, then continue the run with Agent.resume(run_id)."
        )
    return JournalCorruptError(f"journal {path} is damaged or not an agentloop journal: {e}")


def _disk_full(path: str) -> bool:
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < _FULL_BELOW
    except OSError:
        return False


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open; on a full disk the rollback itself may fail, and that changes nothing."""
    try:
        if conn.in_transaction:
            conn.rollback()
    except sqlite3.Error:
        pass
