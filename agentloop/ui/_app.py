"""The inspector's ASGI app (Starlette): runs list, run page, decisions, compare, live state.

Reads go through a read-only `SQLiteJournal` (SQLite `mode=ro`): the inspector never takes a
write lock a running worker would wait on. Decisions (and resuming, when allowed) go through a
second, writable journal that leases the run exactly as `Agent.resume` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentloop import (
    Agent,
    AgentloopError,
    JournalError,
    RunNotFoundError,
    RunPage,
    RunSummary,
    SQLiteJournal,
)

from ..abc import STATUS_GROUPS
from ._compare import compare_runs
from ._pages import AHEAD, TAIL, Window, page_number, pages_of
from ._responses import SHAPE_ERRORS, cursor, damaged, decision, error, journal_error, record, run_url
from ._security import LOOPBACK, WILDCARDS, Guard
from ._view import STATUS_LABELS, build_view, clip, status_class, status_label, version_of

__all__ = ["create_app", "AgentFactory"]

AgentFactory = Callable[[str | None, SQLiteJournal], Agent]  # (the run's model, journal) -> Agent
PAGE_SIZE = 50
ENTRY_BYTES = 256 * 1024  # an entry stored larger is shown clipped: its size and first 64 KiB
ENTRIES = 300  # journal entries on one page of a run (a call is 2: its start and its outcome)
COUNTED = 1024  # runs whose counts (calls, tokens) are kept: a page then reads only the new entries
BUILDS = 4  # run pages read and built at once
FILTERS = {
    "final": "final",
    "paused": "paused",
    "interrupted": "interrupted / running",
    "failed": "failed",
    "step_limit": "step limit",
    "other_limit": "other limits",
}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agentloop.ui", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped: model and tool text stays text
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["ms"] = _ms
    env.filters["run_url"] = run_url
    env.filters["clip"] = clip
    env.globals.update(status_label=status_label, status_class=status_class, filters=FILTERS)
    return env


def _when(t: float | None) -> str:
    import time

    if t is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    except (TypeError, ValueError, OverflowError, OSError):  # a tampered time (1e308, 'noon')
        return f"{t!r:.40} (not a time)"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def create_app(
    journal: str | os.PathLike[str] | SQLiteJournal,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    agent_factory: AgentFactory | None = None,
    entries_per_page: int = ENTRIES,
    max_entry_bytes: int = ENTRY_BYTES,
) -> Starlette:
    """The inspector over `journal`: a journal file's path, or a `SQLiteJournal` to read through
    (pages are read with it; decisions are written through a second journal on the same file).

    `token`: when set, every request must carry it (`?token=` once, then a cookie; or
    `Authorization: Bearer`). `agent_factory`: when set, a paused run whose pending calls are
    all decided is resumed in the app (its lifespan task group owns the run) and its page
    follows it live; without it, decisions are recorded and the run waits for `Agent.resume`.
    `entries_per_page`: a run's page shows this many of its journal entries (a run of 100,000
    calls is read and sent a page at a time). `max_entry_bytes`: an entry stored larger (a 32 MiB
    tool result) is shown as its size and first 64 KiB, never parsed (0: every entry is read whole).
    """
    if not 1 <= entries_per_page <= 100_000:
        raise ValueError(f"entries_per_page must be from 1 to 100000, got {entries_per_page}")
    if max_entry_bytes < 0:
        raise ValueError(f"max_entry_bytes must be 0 (no bound) or more, got {max_entry_bytes}")
    reader = journal if isinstance(journal, SQLiteJournal) else SQLiteJournal(journal, read_only=True)
    inspector = _Inspector(reader, agent_factory, entries_per_page)
    inspector.entry_bytes = max_entry_bytes
    routes = [
        Route("/", inspector.runs_list),
        # the run id comes last in every path: an id may itself contain "/"
        Route("/decide/{run_id:path}", inspector.decide, methods=["POST"]),
        Route("/runs/{run_id:path}", inspector.run_page),
        Route("/compare", inspector.compare),
        Mount("/static", StaticFiles(packages=[("agentloop.ui", "static")]), name="static"),
    ]
    env = inspector.env
    handlers = {JournalError: journal_error(env), **dict.fromkeys(SHAPE_ERRORS, damaged(env))}
    app = Starlette(routes=routes, lifespan=inspector.lifespan, exception_handlers=handlers)
    hosts: set[str] | None = set(LOOPBACK) | {host, f"[{host}]"}
    if token is not None and host.strip("[]") in WILDCARDS:
        hosts = None  # served on every address: reached by names unknown here; the token guards
    app.add_middleware(Guard, hosts=hosts, token=token)
    app.state.inspector = inspector
    return app


class _Inspector:
    """The app's handlers over one journal: a reader for pages, a writer for decisions and resumes.

    Every page, and every live update of one, is built from ONE read of the journal (one SQLite
    read transaction): its status badge, its live flag and its entries always agree."""

    def __init__(self, reader: SQLiteJournal, agent_factory: AgentFactory | None, size: int) -> None:
        self.reader = reader
        self.size = size
        self.entry_bytes = ENTRY_BYTES  # an entry stored larger is read clipped (see read_window)
        # run id -> (created_at, seq, tool calls, tokens, output) counted up to seq (entries are append-only)
        self.counts: OrderedDict[str, tuple[float, int, int, int, Any]] = OrderedDict()
        self.writer = SQLiteJournal(reader.path, durability=reader.durability, lease_ttl=reader.lease_ttl)
        self.agent_factory = agent_factory
        self.env = _env()
        self.csrf = secrets.token_urlsafe(16)
        self.tasks: anyio.abc.TaskGroup | None = None  # the lifespan's: owns the runs resumed here
        self.resuming: set[str] = set()
        self.errors: dict[str, str] = {}
        self.done: dict[str, anyio.Event] = {}  # run id -> set when the inspector's resume of it ends
        self._builds: anyio.CapacityLimiter | None = None
        self._deciding: anyio.Lock | None = None

    def builds(self) -> anyio.CapacityLimiter:
        """Whole runs read and built at once: a run can hold megabytes, and a hundred open pages
        of it must not hold a hundred copies (made here: a limiter needs the running loop)."""
        if self._builds is None:
            self._builds = anyio.CapacityLimiter(BUILDS)
        return self._builds

    def deciding(self) -> anyio.Lock:
        """One decision journaled at a time: each takes the run's lease through the one writer,
        and a second one at once was refused as if another process ran the run."""
        if self._deciding is None:
            self._deciding = anyio.Lock()
        return self._deciding

    def page(self, name: str, request: Request, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(csrf=self.csrf, path=request.url.path, **context)
        return HTMLResponse(html)

    def update(self, name: str, state: tuple[str, bool, str], **context: Any) -> Response:
        """A live page's update: the body to swap in (or 204: nothing moved) and its state
        (version, live, status label), read in the same transaction as the body."""
        version, live, status = state
        status = status if status in _LABELS else "other"  # journal text: not sent as a header as it is
        headers = {
            "x-agentloop-version": version,
            "x-agentloop-live": str(int(live)),
            "x-agentloop-status": status,
        }
        if not name:
            return Response(status_code=204, headers=headers)
        html = self.env.get_template(name).render(csrf=self.csrf, **context)
        return HTMLResponse(html, headers=headers)

    async def runs_list(self, request: Request) -> Response:
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in STATUS_GROUPS:
            return error(self.env, 400, f"unknown status filter {status!r}")
        search = (q.get("q") or "").strip() or None
        after = cursor(q.get("after"))
        marker = None
        if search:  # a search may scan every run: a live one searches again only when the journal moved
            marker = await self.reader.change_marker()  # read first: a write after it shows next time
            if q.get("partial") and q.get("since") == marker:
                return self.update("", (marker, True, ""))
        # one page, one read transaction: bounded work however many runs the journal holds, so a
        # live list can ask again every few seconds
        result = await self.reader.query_runs(status=status, search=search, limit=PAGE_SIZE, after=after)
        params = {k: v for k, v in {"status": status, "q": search}.items() if v}
        more = None
        if result.cursor is not None:
            more = "?" + urlencode({**params, "after": f"{result.cursor[0]!r}:{result.cursor[1]}"})
        version = marker or _list_version(result)
        context = dict(page=result, status=status, search=search or "", more=more, first=after is not None)
        if q.get("partial"):
            unchanged = q.get("since") == version
            return self.update("" if unchanged else "_runs_body.html", (version, True, ""), **context)
        kept = {**params, **({"after": q["after"]} if after is not None else {}), "partial": "1"}
        return self.page("runs.html", request, version=version, src="/?" + urlencode(kept), **context)

    def _run_id(self, request: Request) -> str:
        return str(request.path_params["run_id"] or request.query_params.get("id", ""))

    async def read(self, run_id: str, first: int = 1, limit: int = 0, tail: int = 0) -> Any:
        """A window of the run (see `SQLiteJournal.read_window`) and the run's summary, whose counts
        add the entries new since the last read of the run to the ones counted then: however long
        the run, a read costs its window and the entries written since."""
        base = self.counts.get(run_id)
        w = await self.reader.read_window(
            run_id, first=first, limit=limit, tail=tail, counted=base[1] if base else 0,
            max_entry_bytes=self.entry_bytes,
        )  # fmt: skip
        s = w.summary
        if base is not None and (base[0] != s.created_at or w.last_seq < base[1]):
            self.counts.pop(run_id, None)  # deleted and made again under the same id: count it afresh
            return await self.read(run_id, first, limit, tail)
        calls, tokens, output = s.tool_calls, s.total_tokens, s.output
        if base is not None:
            calls, tokens = calls + base[2], tokens + base[3]
            output = base[4] if output is None else output
        self.counts[run_id] = (s.created_at, w.last_seq, calls, tokens, output)
        self.counts.move_to_end(run_id)
        while len(self.counts) > COUNTED:
            self.counts.popitem(last=False)
        return w, dataclasses.replace(s, tool_calls=calls, total_tokens=tokens, output=output)

    async def run_page(self, request: Request) -> Response:
        run_id, q = self._run_id(request), request.query_params
        try:
            number = page_number(q.get("page"))
        except ValueError as e:
            return error(self.env, 400, str(e))
        resuming = run_id in self.resuming  # seen before the read: a resume ending meanwhile shows next time
        try:
            if q.get("since") is not None:  # the run's state, no entries: O(1)
                w, summary = await self.read(run_id)
                live = summary.live or resuming
                if version_of(summary, live, w.last_seq) == q["since"]:
                    return self.update("", (q["since"], live, status_label(summary.status, live)))
            async with self.builds():
                if number is None:  # the latest page
                    number = pages_of((await self.read(run_id))[0].last_seq, self.size)
                view, summary, live = await self._view(run_id, number, resuming)
        except RunNotFoundError as e:
            return error(self.env, 404, str(e))
        context = dict(
            run=view,
            live=live,
            can_resume=self.agent_factory is not None,
            resume_error=self.errors.get(run_id),
            pager=self._pager(run_id, number, view.pages),
        )
        if q.get("partial"):
            state = (view.version, live, status_label(summary.status, live))
            return self.update("_run_body.html", state, **context)
        src = run_url(run_id, partial="1", page=str(number))
        return self.page("run.html", request, src=src, **context)

    async def _view(self, run_id: str, number: int, resuming: bool) -> tuple[Any, RunSummary, bool]:
        """Page `number` of the run, from one read: its entries, the one before (where its first
        step started) and up to AHEAD after (its calls' outcomes), the run's tail (pending calls)."""
        first = (number - 1) * self.size + 1
        start = max(1, first - 1)
        w, summary = await self.read(run_id, start, self.size + AHEAD + (first - start), TAIL)
        entries = w.run.entries
        before = entries[0].at if entries and first > 1 and entries[0].seq == first - 1 else None
        shown = [e for e in entries if first <= e.seq < first + self.size]
        ahead = [e for e in entries if e.seq >= first + self.size]
        tail = [*entries, *w.tail][
            -TAIL:
        ]  # the run's last entries (the read gives the ones after the window)
        window = Window(shown, before, ahead, tail, first=number == 1)
        live = summary.live or resuming
        view = build_view(w.run, summary, live, window, w.last_seq)
        view.pages = pages_of(w.last_seq, self.size)
        return view, summary, live

    def _pager(self, run_id: str, number: int, pages: int) -> dict[str, Any]:
        def link(n: int) -> str | None:
            return run_url(run_id, page=str(n)) if 1 <= n <= pages and n != number else None

        return {
            "number": number,
            "pages": pages,
            "first": link(1),
            "earlier": link(number - 1),
            "later": link(number + 1),
            "latest": link(pages),
        }

    async def decide(self, request: Request) -> Response:
        run_id = self._run_id(request)
        form = await request.form()
        if not secrets.compare_digest(str(form.get("csrf", "")), self.csrf):
            return error(self.env, 403, "this form is stale or came from another site; reload the run's page")
        call_id = str(form.get("call_id", ""))
        if run_id in self.resuming:  # decided already, and resuming: a second resume would race it
            return error(
                self.env, 409, f"run {run_id!r} is being resumed with the decisions given; reload its page"
            )
        try:
            choice = decision(str(form.get("decision", "")), str(form.get("value", "")))
            async with self.deciding():
                ready = await record(self.writer, run_id, call_id, choice)
        except (AgentloopError, ValueError) as e:
            return error(self.env, 409, str(e))
        if (
            ready
            and self.agent_factory is not None
            and self.tasks is not None
            and run_id not in self.resuming
        ):
            self.resuming.add(run_id)
            self.done[run_id] = anyio.Event()
            self.tasks.start_soon(self._resume, run_id)
        return RedirectResponse(run_url(run_id), status_code=303)

    async def _resume(self, run_id: str) -> None:
        assert self.agent_factory is not None
        agent = None
        try:
            run = await self.reader.load(run_id)
            agent = self.agent_factory(run.info.model, self.writer)
            await agent.resume(run_id)
        except Exception as e:
            self.errors[run_id] = f"{type(e).__name__}: {e}"
        finally:
            self.resuming.discard(run_id)
            self.done[run_id].set()
            close = getattr(getattr(agent, "client", None), "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    async def compare(self, request: Request) -> Response:
        ids = [i for i in request.query_params.getlist("run") if i][:2]
        if len(ids) != 2:
            return error(self.env, 400, "pick two runs to compare (tick two boxes in the runs list)")
        try:
            async with self.builds():  # the first page of each: bounded however long the runs
                a, b = [(await self._view(i, 1, False))[0] for i in ids]
        except RunNotFoundError as e:
            return error(self.env, 404, str(e))
        return self.page("compare.html", request, a=a, b=b, rows=compare_runs(a, b))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:  # owns the runs the inspector resumes
            self.tasks = tg
            try:
                yield
            finally:
                self.tasks = None
                tg.cancel_scope.cancel()
        self.reader.close()
        self.writer.close()


_LABELS = {*STATUS_LABELS.values(), "running", ""}


def _list_version(page: RunPage) -> str:
    """What a live runs list compares: every shown field of every row, the count and the cursor."""
    rows = [
        (r.run_id, r.status, r.live, r.updated_at, r.steps, r.tool_calls, r.total_tokens) for r in page.runs
    ]
    return hashlib.blake2b(repr((rows, page.total, page.cursor)).encode(), digest_size=12).hexdigest()


__all__ += ["STATUS_LABELS"]
