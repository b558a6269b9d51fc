"""The inspector's small pieces around its pages: error pages, run URLs, the paging cursor, decisions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from agentloop import Decision, JournalError, Override, Reject, SQLiteJournal

from ..abc import Entry, decision_to_data
from ._pages import TAIL, pending_of

__all__ = ["run_url", "cursor", "decision", "record", "error", "journal_error", "damaged", "SHAPE_ERRORS"]


def run_url(run_id: str, route: str = "runs", **query: str) -> str:
    """The URL of a run's page (or its `decide` form): the id is one path segment ("/" is %2F),
    so an id such as "x/../../decide/y" cannot make a link or a form point at another run; an id
    a browser would still read as a dot segment ("." or "..") goes in the query instead."""
    if run_id in ("", ".", ".."):
        query = {"id": run_id, **query}
        path = f"/{route}/"
    else:
        path = f"/{route}/{quote(run_id, safe='')}"
    return path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")


def cursor(text: str | None) -> tuple[float, str] | None:
    """The runs list's `after=` ("created_at:run_id"); anything else is the first page."""
    if not text:
        return None
    ts, _, run_id = text.partition(":")
    try:
        return float(ts), run_id
    except ValueError:
        return None


def decision(kind: str, value: str) -> Decision:
    if kind == "approve":
        return True
    if kind == "reject":
        return Reject(value.strip())
    if kind == "override":
        try:
            return Override(json.loads(value))
        except RecursionError:  # 3,000 brackets fit in a form: a 500 before
            raise ValueError(
                "the override value is nested too deep to read as JSON; send a flatter value, or text"
            ) from None
        except ValueError:
            return Override(value)
    raise ValueError(f"unknown decision {kind!r}: approve, reject or override")


async def record(journal: SQLiteJournal, run_id: str, call_id: str, choice: Decision) -> bool:
    """Journal one decision under the run's lease; True when every pending call is decided.

    What is pending is read from the run's last `TAIL` entries (its `paused` entry and the
    decisions since), as the run's page reads it: a decision costs the tail, not a replay of the
    whole run (a run of 100,000 entries was loaded and replayed whole on every click). Only when
    the tail cannot say (no `paused` entry in it: more than `TAIL` entries since the pause) is
    the run replayed."""
    token = await journal.acquire(run_id)  # RunLockedError while a worker runs it
    try:
        pending, decided, step = await _waiting(journal, run_id)
        if call_id not in pending:
            raise JournalError(
                f"call {call_id!r} of run {run_id!r} is not waiting for a decision (reload the page)"
            )
        await journal.append(run_id, Entry.APPROVALS, {call_id: decision_to_data(choice)}, step=step)
        return pending <= {*decided, call_id}
    finally:
        with anyio.CancelScope(shield=True):
            await journal.release(run_id, token)


async def _waiting(journal: SQLiteJournal, run_id: str) -> tuple[set[str], set[str], int]:
    """The ids of the calls waiting for a decision, those decided already, and the run's step."""
    from ..abc import replay

    # every entry but `paused` / `approvals` read as its size and first byte: what is pending
    # needs only those two kinds' data and the outcomes' call ids (a 32 MiB result is not read)
    w = await journal.read_window(run_id, tail=TAIL, max_entry_bytes=1)
    pending, decided, problem = pending_of(w.summary.status, w.tail)
    if w.summary.status == "paused" and problem is None:
        return {p["id"] for p in pending}, set(decided), w.run.info.steps
    state = replay(await journal.load(run_id))
    return {p.id for p in state.pending}, set(state.approvals), state.steps


def error(env: jinja2.Environment, status: int, message: str) -> HTMLResponse:
    html = env.get_template("error.html").render(status=status, message=message, path="")
    return HTMLResponse(html, status_code=status)


def journal_error(env: jinja2.Environment) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        return error(env, 500, str(exc))

    return handler


SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError)  # as `agentloop runs`


def damaged(env: jinja2.Environment) -> Callable[[Request, Exception], Any]:
    """Valid JSON of the wrong shape in the journal: a page, not a bare 500."""

    async def handler(request: Request, exc: Exception) -> Response:
        what = f"{type(exc).__name__}: {exc}"[:300]
        return error(env, 500, f"the journal has damaged data this page cannot show ({what}); "
                               "restore it from a backup or open another journal")  # fmt: skip

    return handler
