"""The inspector's ASGI app (Starlette): runs list, run page, decisions, compare, live state.

Reads go through a read-only `SQLiteJournal` (SQLite `mode=ro`): the inspector never takes a
write lock a running worker would wait on. Decisions (and resuming, when allowed) go through a
second, writable journal that leases the run exactly as `Agent.resume` does.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentloop import (
    Agent,
    AgentloopError,
    Decision,
    JournalError,
    Override,
    Reject,
    RunNotFoundError,
    SQLiteJournal,
)

from ..abc import STATUS_GROUPS, Entry, decision_to_data
from ._compare import compare_runs
from ._security import LOOPBACK, Guard
from ._view import STATUS_LABELS, build_view, status_class, status_label

__all__ = ["create_app", "AgentFactory"]

AgentFactory = Callable[[str | None, SQLiteJournal], Agent]  # (the run's model, journal) -> Agent
PAGE_SIZE = 50
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
    env.globals.update(status_label=status_label, status_class=status_class, filters=FILTERS)
    return env


def _when(t: float | None) -> str:
    import time

    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def create_app(
    journal_path: str,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    agent_factory: AgentFactory | None = None,
) -> Starlette:
    """The inspector over the journal at `journal_path`.

    `token`: when set, every request must carry it (`?token=` once, then a cookie; or
    `Authorization: Bearer`). `agent_factory`: when set, a paused run whose pending calls are
    all decided is resumed in the app (its lifespan task group owns the run) and its page
    follows it live; without it, decisions are recorded and the run waits for `Agent.resume`.
    """
    inspector = _Inspector(journal_path, agent_factory)
    routes = [
        Route("/", inspector.runs_list),
        # the run id comes last in every path: an id may itself contain "/" (or "/state")
        Route("/state/{run_id:path}", inspector.run_state),
        Route("/decide/{run_id:path}", inspector.decide, methods=["POST"]),
        Route("/runs/{run_id:path}", inspector.run_page),
        Route("/compare", inspector.compare),
        Mount("/static", StaticFiles(packages=[("agentloop.ui", "static")]), name="static"),
    ]
    env = inspector.env
    damaged = _damaged(env)  # valid JSON of the wrong shape in the journal: a page, not a bare 500
    handlers = {JournalError: _journal_error(env), **dict.fromkeys(_SHAPE_ERRORS, damaged)}
    app = Starlette(routes=routes, lifespan=inspector.lifespan, exception_handlers=handlers)
    hosts = set(LOOPBACK) | {host, f"[{host}]"}
    app.add_middleware(Guard, hosts=hosts, token=token)
    app.state.inspector = inspector
    return app


class _Inspector:
    """The app's handlers over one journal: a reader for pages, a writer for decisions and resumes."""

    def __init__(self, journal_path: str, agent_factory: AgentFactory | None) -> None:
        self.reader = SQLiteJournal(journal_path, read_only=True)
        self.writer = SQLiteJournal(journal_path)
        self.agent_factory = agent_factory
        self.env = _env()
        self.csrf = secrets.token_urlsafe(16)
        self.tasks: anyio.abc.TaskGroup | None = None  # the lifespan's: owns the runs resumed here
        self.resuming: set[str] = set()
        self.errors: dict[str, str] = {}
        self.done: dict[str, anyio.Event] = {}  # run id -> set when the inspector's resume of it ends

    def page(self, name: str, request: Request, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(csrf=self.csrf, path=request.url.path, **context)
        return HTMLResponse(html)

    async def runs_list(self, request: Request) -> Response:
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in STATUS_GROUPS:
            return _error(self.env, 400, f"unknown status filter {status!r}")
        search = (q.get("q") or "").strip() or None
        after = _cursor(q.get("after"))
        result = await self.reader.query_runs(status=status, search=search, limit=PAGE_SIZE, after=after)
        more = None
        if result.cursor is not None:
            params = {k: v for k, v in {"status": status, "q": search}.items() if v}
            more = "?" + urlencode({**params, "after": f"{result.cursor[0]!r}:{result.cursor[1]}"})
        return self.page(
            "runs.html",
            request,
            page=result,
            status=status,
            search=search or "",
            more=more,
            first=after is not None,
        )

    async def run_page(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            run = await self.reader.load(run_id)
            summary = await self.reader.run_summary(run_id)
        except RunNotFoundError as e:
            return _error(self.env, 404, str(e))
        context = dict(
            run=build_view(run, summary),
            live=summary.live or run_id in self.resuming,
            can_resume=self.agent_factory is not None,
            resume_error=self.errors.get(run_id),
        )
        if request.query_params.get("partial"):
            return HTMLResponse(self.env.get_template("_run_body.html").render(csrf=self.csrf, **context))
        return self.page("run.html", request, **context)

    async def run_state(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            run = await self.reader.load(run_id)
            summary = await self.reader.run_summary(run_id)
        except RunNotFoundError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        live = summary.live or run_id in self.resuming
        version = build_view(run, summary).version
        return JSONResponse(
            {"version": version, "live": live, "status": status_label(summary.status, summary.live)}
        )

    async def decide(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        form = await request.form()
        if not secrets.compare_digest(str(form.get("csrf", "")), self.csrf):
            return _error(
                self.env, 403, "this form is stale or came from another site; reload the run's page"
            )
        call_id = str(form.get("call_id", ""))
        try:
            decision = _decision(str(form.get("decision", "")), str(form.get("value", "")))
            ready = await _record(self.writer, run_id, call_id, decision)
        except (AgentloopError, ValueError) as e:
            return _error(self.env, 409, str(e))
        if ready and self.agent_factory is not None and self.tasks is not None:
            self.resuming.add(run_id)
            self.done[run_id] = anyio.Event()
            self.tasks.start_soon(self._resume, run_id)
        return RedirectResponse(f"/runs/{_quote(run_id)}", status_code=303)

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
            return _error(self.env, 400, "pick two runs to compare (tick two boxes in the runs list)")
        try:
            runs = [await self.reader.load(i) for i in ids]
            summaries = [await self.reader.run_summary(i) for i in ids]
        except RunNotFoundError as e:
            return _error(self.env, 404, str(e))
        views = [build_view(r, s) for r, s in zip(runs, summaries, strict=True)]
        return self.page(
            "compare.html", request, a=views[0], b=views[1], rows=compare_runs(views[0], views[1])
        )

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


def _journal_error(env: jinja2.Environment) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        return _error(env, 500, str(exc))

    return handler


_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError)


def _damaged(env: jinja2.Environment) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        what = f"{type(exc).__name__}: {exc}"[:300]
        return _error(env, 500, f"the journal has damaged data this page cannot show ({what}); "
                                "restore it from a backup or open another journal")  # fmt: skip

    return handler


def _error(env: jinja2.Environment, status: int, message: str) -> HTMLResponse:
    html = env.get_template("error.html").render(status=status, message=message, path="")
    return HTMLResponse(html, status_code=status)


def _quote(run_id: str) -> str:
    from urllib.parse import quote

    return quote(run_id, safe="/")


def _cursor(text: str | None) -> tuple[float, str] | None:
    if not text:
        return None
    ts, _, run_id = text.partition(":")
    try:
        return float(ts), run_id
    except ValueError:
        return None


def _decision(kind: str, value: str) -> Decision:
    if kind == "approve":
        return True
    if kind == "reject":
        return Reject(value.strip())
    if kind == "override":
        try:
            return Override(json.loads(value))
        except ValueError:
            return Override(value)
    raise ValueError(f"unknown decision {kind!r}: approve, reject or override")


async def _record(journal: SQLiteJournal, run_id: str, call_id: str, decision: Decision) -> bool:
    """Journal one decision under the run's lease; True when every pending call is decided."""
    from ..abc import replay

    token = await journal.acquire(run_id)  # RunLockedError while a worker runs it
    try:
        state = replay(await journal.load(run_id))
        pending = {p.id for p in state.pending}
        if call_id not in pending:
            raise JournalError(
                f"call {call_id!r} of run {run_id!r} is not waiting for a decision (reload the page)"
            )
        await journal.append(run_id, Entry.APPROVALS, {call_id: decision_to_data(decision)}, step=state.steps)
        return pending <= {*state.approvals, call_id}
    finally:
        with anyio.CancelScope(shield=True):
            await journal.release(run_id, token)


__all__ += ["STATUS_LABELS"]
