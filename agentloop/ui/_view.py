"""What the run page shows, computed from a journaled run: steps, calls, timing, resume markers, chat.

Only plain data here (no HTML): the templates render it, and Jinja2 escapes every string, so
text from a model or a tool can never become markup.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from agentloop import RunSummary

from ..abc import Entry, JournaledRun
from ._clip import FIELD_LIMIT, Clipper, clip, clipped_entry
from ._pages import AHEAD, Window, pending_of

__all__ = ["RunView", "build_view", "status_label", "version_of", "clip", "STATUS_LABELS"]

STATUS_LABELS = {
    "final": "final",
    "paused": "paused",
    "running": "interrupted",
    "failed": "failed",
    "max_steps": "step limit",
    "max_tool_calls": "tool-call limit",
    "max_total_tokens": "token limit",
    "timeout": "time limit",
    "loop_detected": "loop detected",
}


def status_label(status: str, live: bool) -> str:
    return "running" if live else STATUS_LABELS.get(status, status[:40])  # journal text: clipped


def version_of(summary: RunSummary, live: bool, last_seq: int) -> str:
    """What a live page compares to know whether the run moved (every append moves `last_seq`
    and `updated_at`; a lease taken or given up moves `live`): read without counting anything."""
    s = summary
    state = (s.updated_at, s.status, live, s.steps, last_seq)
    # a digest: the journal's status text (any string) never reaches an HTTP header as it is
    return hashlib.blake2b(repr(state).encode(), digest_size=12).hexdigest()


def status_class(status: str, live: bool) -> str:
    label = status_label(status, live)
    return {"final": "ok", "running": "live", "paused": "paused", "interrupted": "warn"}.get(label, "bad")


@dataclass
class CallView:
    id: str
    name: str
    arguments: str  # pretty JSON (or the raw text the model sent)
    status: str  # the outcome, or "running" / "interrupted" when it has none yet
    content: str | None = None
    error: str | None = None
    traceback: str | None = None
    start: float | None = None
    end: float | None = None
    duration_s: float | None = None
    runs: int = 0  # how many times it was started (2: re-ran after a crash)
    start_attempt: int = 0  # which attempt (0, then +1 per `resumed` entry) last started it
    note: str | None = None  # replayed / re-ran / not re-run / decided by a human
    bar: tuple[float, float] = (0.0, 0.0)  # x and width in 0..1000 of the run's span


@dataclass
class StepView:
    n: int
    start: float
    end: float
    usage: dict[str, int]
    content: str | None
    calls: list[CallView] = field(default_factory=list)
    bar: tuple[float, float] = (0.0, 0.0)


@dataclass
class Marker:
    kind: Entry  # the entry it marks: RESUMED | PAUSED | APPROVALS | FAILED | END (its value is a CSS class)
    step: int
    at: float
    text: str


@dataclass
class RunView:
    summary: RunSummary
    steps: list[StepView]
    markers: list[Marker]
    chat: list[dict[str, Any]]  # {"role", "content", "calls": [name(args)...], "tool": name}
    usage: dict[str, int]
    pending: list[dict[str, Any]]  # paused: {"id", "name", "arguments", "decision"}
    span: float
    version: str
    error: str | None = None  # the journal could not be replayed
    shortened: float = 0.0  # seconds of idle time (a pause, a crash) left out of the timeline
    pages: int = 1  # how many pages the run's entries fill


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        text = value
        if len(text) > FIELD_LIMIT:  # shown clipped anyway: not worth parsing and re-indenting
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return text
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _decision_text(data: Any) -> str:
    if isinstance(data, dict) and "override" in data:
        return f"override: {_pretty(data['override'])}"
    if isinstance(data, dict) and "reject" in data:
        return f"rejected{': ' + data['reject'] if data['reject'] else ''}"
    return "approved" if data else "rejected"


def build_view(
    run: JournaledRun,
    summary: RunSummary,
    live: bool | None = None,
    window: Window | None = None,
    last_seq: int = 0,
) -> RunView:
    """The run page's data: steps and calls on a timeline, markers, the chat, usage, pending calls.

    `window`: the entries the page shows (default: all of `run.entries`, the run's first page).
    `run`, `summary` and the window must come from one read (`SQLiteJournal.read_window`): the
    badge and the entries then always agree. `live`: the run is followed (default `summary.live`)."""
    window = window or Window(run.entries, tail=run.entries)
    builder = _Builder(run, window)
    for entry in window.entries:
        builder.take(entry)
        builder.last_at = entry.at
    for entry in window.ahead:  # only the outcomes of this page's calls: the rest is on later pages
        if entry.kind in (Entry.TOOL_START, Entry.TOOL_END) and entry.call_id in builder.calls:
            builder.take(entry)
    builder.cut = len(window.ahead) >= AHEAD
    live = summary.live if live is None else live
    view = builder.finish(summary, live, window, version_of(summary, live, last_seq))
    Clipper().view(view)
    return view


class _Builder:
    """Reads the journal's entries in order into the views (one method per entry kind)."""

    def __init__(self, run: JournaledRun, window: Window) -> None:
        self.start = self.last_at = run.info.created_at if window.before is None else window.before
        self.cut = False  # the entries read after the page stop short of the run's end
        self.steps: list[StepView] = []
        self.calls: dict[str, CallView] = {}
        self.markers: list[Marker] = []
        self.attempt = 0  # attempts of the run seen so far in the journal: +1 at each `resumed` entry
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.chat: list[dict[str, Any]] = [
            {"role": m.get("role", "?"), "content": _text(m.get("content")), "calls": []}
            for m in (run.header.get("messages", []) if window.first else [])
        ]
        self.decisions: dict[str, Any] = {}

    def take(self, e: Any) -> None:
        handler = _HANDLERS.get(e.kind)
        shown = clipped_entry(e.data)  # a tool_start's data is not shown: clipped or not, the same
        if shown is not None and handler is not None and e.kind != Entry.TOOL_START:
            self.clipped(e, shown)
        elif handler is not None:
            handler(self, e)

    def clipped(self, e: Any, text: str) -> None:
        """An entry the journal read clipped (too large): its size and first bytes, where it goes."""
        if e.kind == Entry.MODEL:
            self.steps.append(StepView(e.step, self.last_at, e.at, {}, text))
            self.chat.append({"role": "assistant", "content": text, "calls": []})
        elif e.kind == Entry.TOOL_END and e.call_id in self.calls:
            cv = self.calls[e.call_id]
            cv.status, cv.content, cv.end = "clipped", text, e.at
            cv.start = e.at if cv.start is None else cv.start
            self.chat.append(
                {"role": "tool", "tool": cv.name, "content": text, "calls": [], "status": "clipped"}
            )
        elif e.kind != Entry.TOOL_END:
            self.markers.append(Marker(e.kind, e.step, e.at, text))

    def model(self, e: Any) -> None:
        message = e.data.get("message") or {}
        u = {k: int(v) for k, v in (e.data.get("usage") or {}).items() if isinstance(v, int)}
        for k in self.usage:
            self.usage[k] += u.get(k, 0)
        step = StepView(e.step, self.last_at, e.at, u, message.get("content"))
        for c in message.get("tool_calls") or ():
            fn = c.get("function") or {}
            cv = CallView(
                str(c.get("id")), str(fn.get("name")), _pretty(fn.get("arguments", "")), "not started"
            )
            step.calls.append(cv)
            self.calls[cv.id] = cv
        self.steps.append(step)
        calls = [f"{c.name}({c.arguments})" for c in step.calls]
        self.chat.append({"role": "assistant", "content": _text(message.get("content")), "calls": calls})

    def tool_start(self, e: Any) -> None:
        cv = self.calls.get(e.call_id)
        if cv is None:
            return
        cv.runs += 1
        # journal order, not clocks: a start seen before a `resumed` entry belongs to the
        # attempt that was interrupted (time.time() of two processes need not be ordered)
        if cv.runs > 1 or (cv.start is not None and cv.start_attempt < self.attempt):
            cv.note = "re-ran after the resume (idempotent)"
        cv.start_attempt = self.attempt
        cv.start, cv.status = e.at, "running"

    def tool_end(self, e: Any) -> None:
        cv = self.calls.get(e.call_id)
        if cv is None:
            return
        d = e.data
        cv.status = str(d.get("status"))
        cv.content, cv.error = d.get("content"), d.get("error")
        cv.traceback = d.get("traceback")
        cv.duration_s = d.get("duration_s") or 0.0
        cv.end = e.at
        if cv.start is None:  # decided without running (rejected, skipped, outcome unknown...)
            cv.start = e.at - (cv.duration_s or 0.0)
        if cv.status == "outcome_unknown":
            cv.note = "not re-run after the crash (not idempotent, or not registered on resume)"
        elif cv.id in self.decisions:
            cv.note = f"human decision: {self.decisions[cv.id]}"
        self.chat.append(
            {"role": "tool", "tool": cv.name, "content": cv.content, "calls": [], "status": cv.status}
        )

    def paused(self, e: Any) -> None:
        names = ", ".join(f"{p.get('name')}" for p in e.data.get("pending", []))
        self.markers.append(Marker(Entry.PAUSED, e.step, e.at, f"paused for approval of {names}"))

    def approvals(self, e: Any) -> None:
        self.decisions.update({k: _decision_text(v) for k, v in e.data.items()})
        text = ", ".join(
            f"{self.calls[k].name if k in self.calls else k}: {self.decisions[k]}" for k in e.data
        )
        self.markers.append(Marker(Entry.APPROVALS, e.step, e.at, f"decisions: {text}"))

    def resumed(self, e: Any) -> None:
        self.attempt += 1
        for cv in self.steps[-1].calls if self.steps else []:
            if cv.end is not None:  # its outcome entry came before this one: replayed, not run
                cv.note = cv.note or "replayed from the journal (not run again)"
        after = e.data.get("after", "stopped")
        self.markers.append(Marker(Entry.RESUMED, e.step, e.at, f"resumed after it was {after}"))

    def failed(self, e: Any) -> None:
        self.markers.append(
            Marker(Entry.FAILED, e.step, e.at, f"{e.data.get('error')}: {e.data.get('message')}")
        )

    def end(self, e: Any) -> None:
        self.markers.append(Marker(Entry.END, e.step, e.at, f"finished: {e.data.get('stop_reason')}"))

    def finish(self, summary: RunSummary, live: bool, window: Window, version: str) -> RunView:
        calls = self.calls
        for cv in calls.values():
            if cv.end is None and self.cut:
                cv.note = "its outcome is on a later page"
            elif cv.status == "running" and not live:
                cv.status = "interrupted"
        end = max([self.last_at, self.start, *(c.end or 0 for c in calls.values())])
        edges = [self.start, end, *(t for s in self.steps for t in (s.start, s.end))]
        edges += [t for c in calls.values() for t in (c.start, c.end) if t is not None]
        place, span, shortened = _timeline(edges)
        for s in self.steps:
            s.bar = _bar(place(s.start), place(s.end), span)
            for c in s.calls:
                if c.start is not None:
                    c.bar = _bar(place(c.start), place(c.end if c.end is not None else end), span)
        pending, error = _pending(summary.status, window, calls)
        return RunView(
            summary, self.steps, self.markers, self.chat, self.usage, pending, span, version, error, shortened
        )


_HANDLERS: dict[str, Callable[[_Builder, Any], None]] = {
    Entry.MODEL: _Builder.model,
    Entry.TOOL_START: _Builder.tool_start,
    Entry.TOOL_END: _Builder.tool_end,
    Entry.PAUSED: _Builder.paused,
    Entry.APPROVALS: _Builder.approvals,
    Entry.RESUMED: _Builder.resumed,
    Entry.FAILED: _Builder.failed,
    Entry.END: _Builder.end,
}  # the kinds the page shows; the others (message, handoff) only feed `replay`


def _pending(
    status: str, window: Window, calls: dict[str, CallView]
) -> tuple[list[dict[str, Any]], str | None]:
    pending, decisions, error = pending_of(status, window.tail)
    for p in pending:
        if p["id"] in calls and calls[p["id"]].status == "not started":
            calls[p["id"]].status = "awaiting_approval"
    shown = [
        {
            "id": str(p["id"]),
            "name": str(p.get("name")),
            "arguments": _pretty(p.get("arguments")),
            "decision": _decision_text(decisions[p["id"]]) if p["id"] in decisions else None,
        }
        for p in pending
    ]
    return shown, error


GAP = 2.0  # seconds: a quieter stretch than this is idle (a pause for approval, a crash) and is shortened


def _timeline(times: list[float]) -> tuple[Callable[[float], float], float, float]:
    """Map wall-clock times onto the waterfall: linear, except that idle gaps (a run can wait
    hours for an approval) are cut down to GAP seconds, or a fifth of the busy time, so the
    steps stay readable. Returns (place, span, seconds left out)."""
    points = sorted(set(times))
    deltas = [b - a for a, b in pairwise(points)]
    busy = sum(d for d in deltas if d <= GAP)
    cap = max(GAP, busy / 5)
    pos = [0.0]
    for d in deltas:
        pos.append(pos[-1] + min(d, cap))

    def place(t: float) -> float:
        i = max(0, bisect_right(points, t) - 1)
        if i >= len(deltas):
            return pos[-1]
        d = deltas[i]
        return pos[i] + (t - points[i]) * (min(d, cap) / d if d else 0.0)

    return place, max(pos[-1], 1e-6), sum(d - cap for d in deltas if d > cap)


def _bar(a: float, b: float, span: float) -> tuple[float, float]:
    x = min(max(0.0, a / span * 1000), 998.0)
    w = max(2.0, (b - a) / span * 1000)
    return round(x, 1), round(min(w, 1000 - x), 1)


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return _pretty(content)
