"""Reading a journal page by page: `RunSummary`, `RunPage` and the SQL behind `Journal.query_runs`.

Kept apart from `sqlite.py` (which writes) because it only reads: the run inspector
(`agentloop ui`) lists 100,000 runs a page at a time with it, over a read-only connection.

Pages are keyset-paginated, newest first: a page ends with a `cursor` (its last run's
`created_at` and id) and the next page starts after it, so a deep page costs what the first
does and runs that land meanwhile do not shift the pages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _json
from .._exceptions import JournalError
from .entries import Entry
from .journal_clip import CLIP_HEAD, SMALL_HEADER, output_of, prompt_of

if TYPE_CHECKING:
    import sqlite3

    from .journal import Journal, JournaledRun, JournalEntry

__all__ = [
    "RunSummary",
    "RunPage",
    "STATUS_GROUPS",
    "query_runs",
    "summarize",
    "status_group",
    "default_query",
    "RunWindow",
    "window_rows",
    "clipped",
    "entry_data",
    "change_marker",
]

# What a user filters by -> the journal statuses it covers. A run that stopped at a limit
# journals the limit's stop reason; one whose process died keeps "running" (and no live lease).
STATUS_GROUPS: dict[str, tuple[str, ...]] = {
    "final": ("final",),
    "paused": ("paused",),
    "interrupted": ("running",),
    "failed": ("failed",),
    "step_limit": ("max_steps",),
    "other_limit": ("max_tool_calls", "max_total_tokens", "timeout", "loop_detected"),
}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of a runs list: the run's `RunInfo` fields plus counts read from its entries.

    `live` is True while a process holds the run's lease (it is being run or resumed);
    `prompt` is the last user message the run started with, `output` its final answer.
    """

    run_id: str
    status: str
    model: str | None
    steps: int
    created_at: float
    updated_at: float
    tool_calls: int
    total_tokens: int
    live: bool
    prompt: str | None
    output: str | None


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs, newest first. `cursor` is None on the last page; `total` is None
    when counting would scan the whole journal (a text search)."""

    runs: list[RunSummary]
    cursor: tuple[float, str] | None
    total: int | None


@dataclass(frozen=True, slots=True)
class RunWindow:
    """A window of one run's entries with what describes the whole run, from ONE read
    transaction (`SQLiteJournal.read_window`): a run of 100,000 calls is shown a page at a time,
    and the badge, the counts and the entries of a page always agree.

    `run.entries` are the entries with `first <= seq < first + limit`; `tail` the run's last
    `tail` entries after those (oldest first; none when the window reaches the run's end);
    `last_seq` the seq of its last entry (0: none yet).
    `summary.tool_calls`, `.total_tokens` and `.output` count only the entries after `counted`
    (entries are append-only: a reader that counted the ones before adds these)."""

    run: JournaledRun
    summary: RunSummary
    last_seq: int
    tail: list[JournalEntry]


_ROWS = "SELECT seq, kind, step, call_id, data, at FROM agentloop_entries WHERE run_id=?"
# The kinds a paused run's pending calls are read from (`ui/_pages.pending_of`): never clipped.
_WHOLE = f"'{Entry.PAUSED.value}', '{Entry.APPROVALS.value}'"
_SIZE = "CASE typeof(data) WHEN 'blob' THEN length(data) ELSE length(CAST(data AS BLOB)) END"
# An entry whose stored text is over the bound comes back as its size and first bytes: SQLite
# measures and cuts it, so the whole text is never copied into Python, let alone parsed.
_CLIPPED_ROWS = (
    "SELECT seq, kind, step, call_id, CASE WHEN n > ? THEN NULL ELSE data END, at, n, "
    "CASE WHEN n > ? THEN substr(CAST(data AS BLOB), 1, ?) END FROM (SELECT run_id, seq, kind, step, "
    f"call_id, data, at, CASE WHEN kind IN ({_WHOLE}) THEN 0 ELSE {_SIZE} END AS n FROM agentloop_entries) "
    "WHERE run_id=?"
)


def clipped(size: int, head: bytes) -> dict[str, Any]:
    """An entry's data read clipped: `{"$clipped": {"bytes": N, "head": its first bytes as text}}`
    (a character cut at the end of the head shows as U+FFFD)."""
    return {"$clipped": {"bytes": size, "head": head.decode("utf-8", "replace")}}


def entry_data(data: Any) -> Any:
    """An entry row's data decoded (a dict already when it was read `clipped`)."""
    return data if isinstance(data, dict) else _json.loads(data)


def _entry_rows(conn: sqlite3.Connection, bound: int, where: str, *args: Any) -> list[Any]:
    """Entry rows of one run (`args[0]` its id); over `bound` bytes (0: none) an entry's data is
    `clipped`, except the kinds in `_WHOLE`."""
    if bound <= 0:
        return conn.execute(f"{_ROWS} AND {where}", args).fetchall()
    rows = conn.execute(f"{_CLIPPED_ROWS} AND {where}", (bound, bound, min(bound, CLIP_HEAD), *args))
    return [r[:6] if r[7] is None else (*r[:4], clipped(r[6], r[7]), r[5]) for r in rows]


def window_rows(
    conn: sqlite3.Connection,
    row: Any,
    alive: Any,
    first: int,
    limit: int,
    tail: int,
    counted: int,
    bound: int,
) -> tuple[list[Any], list[Any], int, RunSummary]:
    """The rows behind a `RunWindow` (the caller holds the read transaction): every query is
    bounded by the window, the tail or the entries after `counted`, never by the run's size."""
    run_id = row[0]
    rows: list[Any] = []
    if limit > 0:
        rows = _entry_rows(conn, bound, "seq >= ? AND seq < ? ORDER BY seq", run_id, first, first + limit)
    tail_rows: list[Any] = []
    if tail > 0:
        after = first + max(limit, 0)
        tail_rows = _entry_rows(conn, bound, "seq >= ? ORDER BY seq DESC LIMIT ?", run_id, after, tail)[::-1]
    last = conn.execute("SELECT MAX(seq) FROM agentloop_entries WHERE run_id=?", (run_id,)).fetchone()[0]
    summary = summarize(conn, [row], alive, after=counted)[0]
    return rows, tail_rows, last or 0, summary


# Every append moves its run's `updated_at` (to the microsecond), a new or deleted run the count,
# a lease taken, given up or gone stale the set of live runs: together they say "something moved"
# without reading an entry. (Integer microseconds mod 2**32: the sum over 10**6 runs stays exact.)
_MARKER = (
    "SELECT COUNT(*), MAX(updated_at), TOTAL(CAST(updated_at * 1000000 AS INTEGER) % 4294967296) "
    "FROM agentloop_runs"
)


def change_marker(conn: sqlite3.Connection, alive: Any) -> str:
    """A short text that changes whenever anything a runs list shows may have changed."""
    conn.execute("BEGIN")
    try:
        runs = conn.execute(_MARKER).fetchone()
        leases = conn.execute("SELECT run_id, host, pid, expires_at FROM agentloop_leases").fetchall()
    finally:
        conn.rollback()
    live = sorted(run_id for run_id, host, pid, expires_at in leases if alive(host, pid, expires_at))
    return hashlib.blake2b(repr((tuple(runs), live)).encode(), digest_size=12).hexdigest()


def _like(text: str) -> str:
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def _like_json(text: str) -> str:
    # The term as JSON writes it inside a string (quotes, newlines, backslashes escaped).
    return _like(_json.dumps_str(text)[1:-1])


# The decoded text of the run's messages and final output is searched, not the JSON around it
# (whose keys would match words such as "content"). A LIKE over the raw JSON text comes first:
# it is cheap and drops almost every run before any JSON is parsed.
_SEARCH = (
    "(r.run_id IN (SELECT run_id FROM agentloop_runs WHERE header LIKE ? ESCAPE '!' AND EXISTS (SELECT 1 FROM "
    "json_each(header, '$.messages') m WHERE json_extract(m.value, '$.content') LIKE ? ESCAPE '!')) "
    "OR r.run_id IN (SELECT run_id FROM agentloop_entries WHERE kind = 'end' AND CAST(data AS TEXT) LIKE ? "
    "ESCAPE '!' AND json_extract(CAST(data AS TEXT), '$.output') LIKE ? ESCAPE '!'))"
)


def query_runs(
    conn: sqlite3.Connection,
    *,
    statuses: tuple[str, ...] | None,
    search: str | None,
    limit: int,
    after: tuple[float, str] | None,
    alive: Any,
) -> RunPage:
    where: list[str] = []
    args: list[Any] = []
    if statuses is not None:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    if search:
        pattern, raw = _like(search), _like_json(search)
        where.append(_SEARCH)
        args.extend([raw, pattern, raw, pattern])
    count_where = " AND ".join(where) or "1"
    count_args = list(args)
    if after is not None:
        where.append("(created_at, run_id) < (?, ?)")
        args.extend(after)
    sql = (
        f"SELECT run_id, status, model, steps, created_at, updated_at, {SMALL_HEADER} FROM agentloop_runs r "
        f"WHERE {' AND '.join(where) or '1'} ORDER BY created_at DESC, run_id DESC LIMIT ?"
    )
    conn.execute("BEGIN")  # one snapshot for the page and its counts
    try:
        rows = conn.execute(sql, [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        total = None
        if not search:
            total = conn.execute(
                f"SELECT COUNT(*) FROM agentloop_runs WHERE {count_where}", count_args
            ).fetchone()[0]
        runs = summarize(conn, rows, alive)
    finally:
        conn.rollback()
    cursor = (rows[-1][4], rows[-1][0]) if more and rows else None
    return RunPage(runs, cursor, total)


_MODEL, _TOOL_END, _END = Entry.MODEL.value, Entry.TOOL_END.value, Entry.END.value
_COUNTED = f"'{_MODEL}', '{_TOOL_END}', '{_END}'"  # the kinds a summary reads


_TOKENS = "json_extract(CAST(data AS TEXT), '$.usage.total_tokens')"
_COUNT = (
    # an integer under 2**40 a turn (no model answers more): a damaged journal cannot overflow the sum
    f"SELECT run_id, SUM(kind = '{_TOOL_END}'), SUM(CASE WHEN kind = '{_MODEL}' AND json_valid(CAST(data AS TEXT)) "
    f"AND typeof({_TOKENS}) = 'integer' AND {_TOKENS} BETWEEN -1099511627775 AND 1099511627775 THEN {_TOKENS} END), "
    f"MAX(CASE WHEN kind = '{_END}' THEN seq END) "
    "FROM agentloop_entries"
)


def summarize(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]], alive: Any, after: int = 0
) -> list[RunSummary]:
    """RunSummary for each (run_id, status, model, steps, created_at, updated_at, header) row;
    its counts cover the entries with seq > `after`. A header of None (over `CLIP_HEAD` bytes,
    `SMALL_HEADER`) has its prompt read clipped by SQLite."""
    if not rows:
        return []
    ids = [r[0] for r in rows]
    marks = ", ".join("?" * len(ids))
    counts: dict[str, tuple[int, int]] = {}
    outputs: dict[str, Any] = {}
    ends = []
    # counted by SQLite, not row by row in Python (a run of 100,000 calls); a tool_end's data (a
    # tool's output, possibly megabytes) is never read, a model answer's only for its tokens
    for run_id, calls, tokens, end in conn.execute(
        f"{_COUNT} WHERE run_id IN ({marks}) AND kind IN ({_COUNTED}) AND seq > ? GROUP BY run_id",
        [*ids, after],
    ):
        counts[run_id] = (calls, tokens or 0)
        if end is not None:
            ends.append((run_id, end))
    for run_id, end in ends:  # the whole entry when it is small, else the output clipped by SQLite
        (data,) = conn.execute(_SMALL_END, (CLIP_HEAD, run_id, end)).fetchone()
        outputs[run_id] = _field(data, "output") if data is not None else output_of(conn, run_id, end)
    leases = {
        run_id: alive(host, pid, expires_at)
        for run_id, host, pid, expires_at in conn.execute(
            f"SELECT run_id, host, pid, expires_at FROM agentloop_leases WHERE run_id IN ({marks})", ids
        )
    }
    out = []
    for run_id, status, model, steps, created, updated, header in rows:
        calls, tokens = counts.get(run_id, (0, 0))
        out.append(
            RunSummary(
                run_id,
                status,
                model,
                steps,
                created,
                updated,
                calls,
                tokens,
                leases.get(run_id, False),
                _prompt(header) if header is not None else prompt_of(conn, run_id),
                outputs.get(run_id),
            )
        )
    return out


_SMALL_END = f"SELECT CASE WHEN {_SIZE} <= ? THEN data END FROM agentloop_entries WHERE run_id=? AND seq=?"


def _field(data: str | bytes, key: str) -> Any:
    try:
        value = _json.loads(data)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) else None


def _prompt(header: str | bytes) -> str | None:
    try:
        messages = _json.loads(header)["messages"]
    except (ValueError, KeyError, TypeError):
        return None
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else _json.dumps_str(content)
    return None


def status_group(status: str | None) -> tuple[str, ...] | None:
    if status is None or status == "":
        return None
    try:
        return STATUS_GROUPS[status]
    except KeyError:
        raise JournalError(
            f"unknown status filter {status!r}; use one of {', '.join(STATUS_GROUPS)}"
        ) from None


def _summary_of(run: JournaledRun) -> RunSummary:
    calls = sum(e.kind == "tool_end" for e in run.entries)
    tokens = sum((e.data.get("usage") or {}).get("total_tokens", 0) for e in run.entries if e.kind == "model")
    output = next((e.data.get("output") for e in run.entries if e.kind == "end"), None)
    users = [m.get("content") for m in run.header.get("messages", []) if m.get("role") == "user"]
    i = run.info
    prompt = users[-1] if users else None
    return RunSummary(
        i.run_id, i.status, i.model, i.steps, i.created_at, i.updated_at, calls, tokens, False, prompt, output
    )


async def default_query(
    journal: Journal, *, status: str | None, search: str | None, limit: int, after: tuple[float, str] | None
) -> RunPage:
    """`Journal.query_runs` for any journal: reads every run (fine for small journals)."""
    runs = sorted(await journal.list_runs(), key=lambda r: (r.created_at, r.run_id), reverse=True)
    statuses = status_group(status)
    out: list[RunSummary] = []
    for info in runs:
        if statuses is not None and info.status not in statuses:
            continue
        if after is not None and (info.created_at, info.run_id) >= after:
            continue
        summary = _summary_of(await journal.load(info.run_id))
        if search and not any(search.lower() in (t or "").lower() for t in (summary.prompt, summary.output)):
            continue
        out.append(summary)
        if len(out) > limit:
            break
    more = len(out) > limit
    out = out[:limit]
    return RunPage(out, (out[-1].created_at, out[-1].run_id) if more else None, None)
