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

# JSON type, value (a longer text's, or an object's JSON text's, first CLIP_HEAD characters), length;
# then, for a text with a NUL (SQLite's json_extract returns a text only up to its first NUL), its
# JSON text's first `_RAW` characters (NUL escaped there) and its exact length. `_ESCAPED` is the JSON
# text with every `\\` escape written `\u005c` (the same text), so a `\u0000` found in it is a
# NUL of the text, never a backslash followed by "u0000"; in it with NUL written `\u0001` no
# NUL is left, and json_extract's length is exact. (`t` without "\u0000" anywhere, the common
# case, is told by one scan: no copy of a large text is made for it.)
_ESCAPED = "replace(t, '\\\\', '\\u005c')"
_NUL = f"instr(t, '\\u0000') AND json_type(t, ?) = 'text' AND instr({_ESCAPED}, '\\u0000')"
_CUT = (
    "json_type(t, ?), CASE WHEN length(v) <= ? THEN v ELSE substr(v, 1, ?) END, length(v), "
    f"CASE WHEN {_NUL} THEN substr({{raw}}, 1, ?) END, "
    f"CASE WHEN {_NUL} THEN length(json_extract(replace({_ESCAPED}, '\\u0000', '\\u0001'), ?)) END"
)
_OUTPUT = (
    f"SELECT {_CUT} FROM (SELECT t, json_extract(t, '$.output') AS v FROM "
    "(SELECT CAST(data AS TEXT) AS t FROM agentloop_entries WHERE run_id=? AND seq=?) WHERE json_valid(t))"
)
# The last user message's content (the prompt the run started with), as `_prompt` reads it.
_PROMPT = (
    f"SELECT {_CUT} FROM (SELECT m.value AS t, json_extract(m.value, '$.content') AS v "
    "FROM agentloop_runs r, json_each(r.header, '$.messages') m WHERE r.run_id=? AND json_valid(r.header) "
    "AND json_type(r.header, '$.messages') = 'array' AND json_type(m.value) = 'object' "
    "AND json_extract(m.value, '$.role') = 'user' ORDER BY m.key DESC LIMIT 1)"
)
# `t -> ?` (a value's JSON text) came with SQLite 3.38; before it a text with a NUL is shown up to it
_RAW_BEFORE_3_38 = "CASE WHEN ? IS NULL THEN NULL END"


def _sql(query: str) -> str:
    import sqlite3  # loaded: a connection is open

    return query.format(raw="t -> ?" if sqlite3.sqlite_version_info >= (3, 38) else _RAW_BEFORE_3_38)


# A JSON text's characters per character of its text, at most: `\u0000` (a control character).
_RAW = 6 * CLIP_HEAD + 2


def _args(path: str) -> tuple[Any, ...]:
    return (path, CLIP_HEAD, CLIP_HEAD, path, path, _RAW, path, path)


def output_of(conn: sqlite3.Connection, run_id: str, seq: int) -> Any:
    """The output of a large "end" entry: as stored, or a long one as its head and what was left out."""
    row = conn.execute(_sql(_OUTPUT), (*_args("$.output"), run_id, seq)).fetchone()
    if row is None or row[0] in (None, "null"):
        return None
    kind, value, size, raw, whole = row
    if raw is not None:
        return _with_nul(raw, whole, "output")
    if size > CLIP_HEAD and kind in ("text", "object", "array"):
        return _clipped(value, size, "output")
    if kind in ("object", "array"):
        return _json.loads(value)
    return bool(value) if kind in ("true", "false") else value


def prompt_of(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The prompt of a run whose header is large: its text (a long one as its head and what was
    left out), or the JSON text of structured content, as the runs list shows a small header's."""
    row = conn.execute(_sql(_PROMPT), (*_args("$.content"), run_id)).fetchone()
    if row is None:
        return None
    kind, value, size, raw, whole = row
    if raw is not None:
        return _with_nul(raw, whole, "prompt")
    if kind == "text":
        return value if size <= CLIP_HEAD else _clipped(value, size, "prompt")
    if kind in ("object", "array"):
        return _json.dumps_str(_json.loads(value)) if size <= CLIP_HEAD else _clipped(value, size, "prompt")
    if kind in (None, "null"):
        return "null"
    return ("true" if value else "false") if kind in ("true", "false") else _json.dumps_str(value)


def _with_nul(raw: str, size: int, what: str) -> str:
    """A text with a NUL, from the head of its JSON text (`raw`, at most `_RAW` characters: enough
    for CLIP_HEAD characters of text) and its length in characters."""
    head = _json_head(raw)[:CLIP_HEAD]
    return head if size <= CLIP_HEAD else _clipped(head, size, what)


def _json_head(raw: str) -> str:
    """The text of a JSON string literal, or of the longest head of it that decodes (the cut may
    fall inside an escape: at most 12 characters are dropped, a surrogate pair's two escapes)."""
    for end in range(len(raw), max(1, len(raw) - 13), -1):
        literal = raw[:end] if end == len(raw) and raw.endswith('"') and len(raw) > 1 else raw[:end] + '"'
        try:
            text = _json.loads(literal)
        except ValueError:
            continue
        if isinstance(text, str):
            return text[:-1] if text and "\ud800" <= text[-1] <= "\udbff" else text  # half a pair
    return ""


def _clipped(head: str, size: int, what: str) -> str:
    return f"{head}\n… [{size - CLIP_HEAD:,} more characters not shown; the journal holds the whole {what}]"
