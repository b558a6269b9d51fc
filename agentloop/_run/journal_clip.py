"""What the runs list shows of a run's large texts, read clipped by SQLite: the final output of
a large "end" entry and the prompt of a large header. SQLite parses the stored JSON and cuts the
one text to `CLIP_HEAD` characters; Python never gets more, however large the run (a 32 MiB
prompt or answer used to be read and parsed whole on every list view, for 120 characters shown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _json

if TYPE_CHECKING:  # `import agentloop` loads no sqlite3 (tests/test_import_cost.py)
    import sqlite3

__all__ = ["CLIP_HEAD", "SMALL_HEADER", "output_of", "prompt_of"]

CLIP_HEAD = 64 * 1024  # bytes of a clipped entry's raw text kept: what a page shows of one text

# The header as a column of the runs list when it is at most CLIP_HEAD bytes (parsed in Python,
# the common case), else NULL: its prompt is then read by `prompt_of`.
SMALL_HEADER = f"CASE WHEN length(CAST(header AS BLOB)) <= {CLIP_HEAD} THEN header END"

# JSON type, value (a longer text's, or an object's JSON text's, first CLIP_HEAD characters), length.
_CUT = "json_type(t, ?), CASE WHEN length(v) <= ? THEN v ELSE substr(v, 1, ?) END, length(v)"
_OUTPUT = (
    f"SELECT {_CUT} FROM (SELECT t, json_extract(t, '$.output') AS v FROM (SELECT CAST(data AS TEXT) AS t "
    "FROM agentloop_entries WHERE run_id=? AND seq=?) WHERE json_valid(t))"
)
# The last user message's content (the prompt the run started with), as `_prompt` reads it.
_PROMPT = (
    f"SELECT {_CUT} FROM (SELECT m.value AS t, json_extract(m.value, '$.content') AS v "
    "FROM agentloop_runs r, json_each(r.header, '$.messages') m WHERE r.run_id=? AND json_valid(r.header) "
    "AND json_type(r.header, '$.messages') = 'array' AND json_type(m.value) = 'object' "
    "AND json_extract(m.value, '$.role') = 'user' ORDER BY m.key DESC LIMIT 1)"
)


def output_of(conn: sqlite3.Connection, run_id: str, seq: int) -> Any:
    """The output of a large "end" entry: as stored, or a long one as its head and what was left out."""
    row = conn.execute(_OUTPUT, ("$.output", CLIP_HEAD, CLIP_HEAD, run_id, seq)).fetchone()
    if row is None or row[0] in (None, "null"):
        return None
    kind, value, size = row
    if size > CLIP_HEAD and kind in ("text", "object", "array"):
        return _clipped(value, size, "output")
    if kind in ("object", "array"):
        return _json.loads(value)
    return bool(value) if kind in ("true", "false") else value


def prompt_of(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The prompt of a run whose header is large: its text (a long one as its head and what was
    left out), or the JSON text of structured content, as the runs list shows a small header's."""
    row = conn.execute(_PROMPT, ("$.content", CLIP_HEAD, CLIP_HEAD, run_id)).fetchone()
    if row is None:
        return None
    kind, value, size = row
    if kind == "text":
        return value if size <= CLIP_HEAD else _clipped(value, size, "prompt")
    if kind in ("object", "array"):
        return _json.dumps_str(_json.loads(value)) if size <= CLIP_HEAD else _clipped(value, size, "prompt")
    if kind in (None, "null"):
        return "null"
    return ("true" if value else "false") if kind in ("true", "false") else _json.dumps_str(value)


def _clipped(head: str, size: int, what: str) -> str:
    return f"{head}\n… [{size - CLIP_HEAD:,} more characters not shown; the journal holds the whole {what}]"
