"""Round 5 of the outside-in attack: hostile routers, tools, journals and callers, through the public API.

Each test is the exact repro of a hole this round found (its docstring says what it did before),
or a README claim no other test tried to break. Raw servers are the byte-exact ones of
test_http_lean_hostile; nothing leaves the loopback.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_lean_hostile import RawServer, ask, client, respond

from agentloop import APIConnectionError, RateLimitError, RetryPolicy
from agentloop.testing import text

pytestmark = pytest.mark.anyio

TRANSPORTS = ["lean", "httpcore"]
ANSWER = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'


# --- a Content-Length in digits that are not ASCII ------------------------------------------------

# Latin-1 bytes whose character str.isdigit() calls a digit but int() cannot read: superscripts.
LATIN1_DIGITS = [b"\xb2", b"\xb9\xb2\xb3", b"1\xb2"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("length", LATIN1_DIGITS)
async def test_a_content_length_in_superscript_digits_is_a_typed_error(transport: str, length: bytes) -> None:
    """Before: the lean transport decodes a head as Latin-1 and checked `Content-Length` with
    str.isdigit(), which is True for '²': int('²') then raised a raw ValueError out of
    FluxClient.request (and Agent.run). Now it is a malformed response, as httpcore says."""
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %b\r\n\r\n%b" % (
        length,
        ANSWER,
    )
    async with RawServer(respond(raw)) as server, client(server.url, transport=transport) as c:
        with pytest.raises(APIConnectionError, match=r"(?i)content-length"):
            await ask(c)


# --- a Retry-After date no clock can hold ---------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_retry_after_date_past_any_clock_is_not_a_crash(transport: str) -> None:
    """Before: `Retry-After: Mon, 01 Jan 99999999999 00:00:00 GMT` (a valid-looking HTTP date)
    made email.utils.mktime_tz raise OverflowError, which escaped FluxClient.request raw instead
    of the 429's RateLimitError. Now an unreadable date is ignored (the usual backoff)."""
    head = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: Mon, 01 Jan 99999999999 00:00:00 GMT\r\n"
    raw = head + b"content-length: 0\r\n\r\n"
    retry = RetryPolicy(max_retries=1, initial_delay=0, max_delay=0)
    async with RawServer(respond(raw)) as server, client(server.url, transport=transport, retry=retry) as c:
        with pytest.raises(RateLimitError):
            await ask(c)
    assert server.opened == 2  # retried once, after the backoff


@settings(max_examples=examples(50))
@given(
    year=st.integers(min_value=10_000, max_value=10**30),
    zone=st.sampled_from(["", " GMT", " +0000", " -9999"]),
)
def test_a_retry_after_date_of_any_year_gives_a_delay(year: int, zone: str) -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.delay(0, {"retry-after": f"Mon, 01 Jan {year} 00:00:00{zone}"}) == policy.delay(0, {})


async def test_the_inspector_answers_a_content_length_in_superscript_digits(tmp_path: Path) -> None:
    """Before: the inspector's guard (an ASGI middleware, for any ASGI server: README "Serving
    `create_app` with another ASGI server") read `Content-Length: ²` with str.isdigit() and
    int() raised a raw ValueError out of the app. Now it is refused like any bad length (413)."""
    pytest.importorskip("starlette")
    from agentloop import SQLiteJournal
    from agentloop.ui import create_app

    path = str(tmp_path / "runs.db")
    SQLiteJournal(path).close()
    app = create_app(path)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"\xb2")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


# --- a tool's exception with a lone surrogate in its message ---------------------------------------

SURROGATE_MODES = [
    "thread",
    "process",
    pytest.param("isolated", marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bwrap here")),
]


@pytest.mark.parametrize("mode", SURROGATE_MODES)
async def test_a_tool_raising_with_a_lone_surrogate_is_raised_and_journaled(
    mode: str, tmp_path: Path
) -> None:
    """Before: an exception message with a lone surrogate (e.g. `b'\\xff'.decode(errors=
    'surrogateescape')` quoted in it) is common in file tools. In a thread the model's text was
    cleaned, but the traceback kept it: a journaled run then died with a raw TypeError (the
    journal's codec refused the record). In "process" / "isolated" the child could not encode its
    result frame and the call ended `crashed` ("exited with code 0 without a result"), the tool's
    error lost. Now the call is `raised` in every mode, its traceback journaled with U+FFFD."""
    import hostile_tools5 as h5

    from agentloop import Agent, Limits, SQLiteJournal, ToolRegistry
    from agentloop.testing import ScriptedModel, call, text, tool_calls

    journal = SQLiteJournal(str(tmp_path / "runs.db"))
    model = ScriptedModel([tool_calls(call("raise_surrogate", {"text": "name"})), text("done")])
    try:
        async with ToolRegistry(sandbox=mode, limits=Limits(timeout=30)) as tools:
            tools.register(h5.raise_surrogate)
            result = await Agent(client=model, tools=tools, journal=journal).run("hi", run_id="r")
        (record,) = result.tool_calls
        assert (record.status, result.output) == ("raised", "done")
        assert "cannot decode name \ufffd" in record.content and "\ufffd" in (record.traceback or "")
        (end,) = [e for e in (await journal.load("r")).entries if e.kind == "tool_end"]
    finally:
        journal.close()
    assert end.data["traceback"] == record.traceback


# --- a call the model sent without a name ----------------------------------------------------------


async def test_a_conversation_with_a_call_without_a_name_can_be_continued() -> None:
    """README: `result.messages` is "ready to continue with run(..., messages=result.messages)",
    and a call with an empty name is `unknown_tool`. Before: the call entered the conversation
    with its empty name, which check_conversation (rightly: providers refuse it) rejected, so
    the run's own result could not be continued (ConversationError), and every later request of
    the run carried a name providers refuse. Now it is stored under a name, like bad arguments
    under "{}"; the record keeps what the model sent."""
    from agentloop import Agent, ToolRegistry
    from agentloop.testing import ScriptedModel, call, text, tool_calls

    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> str:
        """Weather."""
        return "sunny"

    model = ScriptedModel([tool_calls(call("", {"city": "Lisbon"})), text("sorry"), text("again")])
    agent = Agent(client=model, tools=tools)
    first = await agent.run("weather?")
    (record,) = first.tool_calls
    assert (record.status, record.name) == ("unknown_tool", "")
    named = first.messages[1]["tool_calls"][0]["function"]["name"]
    assert isinstance(named, str) and named
    second = await agent.run("and now?", messages=first.messages)
    assert second.output == "again"


# --- a journal edited by hand ----------------------------------------------------------------------


def _edit_header(path: Path, messages: object) -> None:
    import json
    import sqlite3

    con = sqlite3.connect(path)
    try:
        (header,) = con.execute("SELECT header FROM agentloop_runs WHERE run_id = 'r1'").fetchone()
        data = json.loads(header)
        data["messages"] = messages
        con.execute("UPDATE agentloop_runs SET header = ? WHERE run_id = 'r1'", (json.dumps(data),))
        con.commit()
    finally:
        con.close()


TAMPERED_CONVERSATIONS = {
    "a message that is a str": ["hello"],
    "content 5": [{"role": "user", "content": 5}],
    "a part of no type": [{"role": "user", "content": [{"type": "zzz"}]}],
}


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("case", sorted(TAMPERED_CONVERSATIONS))
async def test_a_journal_whose_conversation_was_edited_is_a_damaged_journal(
    wire: str, case: str, tmp_path: Path
) -> None:
    """Before: the journal's header (the conversation a run started with) was replayed without a
    check. A message that is a str crashed the Anthropic wire's encoder with a raw AttributeError
    on resume; content 5 or an unknown part was sent to the router as it was (the check that
    `run(messages=...)` makes was skipped). Now resume raises JournalCorruptError, sends nothing,
    and leaves the run's lease free."""
    from agentloop import Agent, FluxClient, JournalCorruptError, SQLiteJournal, ToolRegistry
    from agentloop.testing import FakeFluxRouter, call, text, tool_calls

    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    path = tmp_path / "runs.db"
    async with FakeFluxRouter([tool_calls(call("pay", {"amount": 3}, id="c1")), text("done")]) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        journal = SQLiteJournal(str(path))
        try:
            async with FluxClient(base_url=url, api_key="sk-round5") as c:
                agent = Agent(client=c, tools=tools, journal=journal)
                paused = await agent.run("pay", run_id="r1")
                assert paused.stop_reason == "approval_required"
                _edit_header(path, TAMPERED_CONVERSATIONS[case])
                with pytest.raises(JournalCorruptError, match="modified or damaged"):
                    await agent.resume("r1", approvals={"c1": True})
                assert len(router.requests) == 1  # nothing sent after the pause
                _edit_header(
                    path, [{"role": "user", "content": "pay"}]
                )  # repaired by hand: the lease is free
                assert (await agent.resume("r1", approvals={"c1": True})).output == "done"
        finally:
            journal.close()


async def test_a_stored_paused_run_whose_pending_call_was_renamed_never_runs() -> None:
    """The arguments of a pending call were already checked against the call that runs (an
    approval of {"to": "bob"} never pays "eve"), not its name. Before: a paused run stored as
    JSON (or a journal's `paused` entry) whose pending call was renamed "pay" -> "lookup" showed the
    reviewer a harmless `lookup`; approving it ran `pay`. Now resume refuses, as for arguments."""
    import json

    from agentloop import Agent, ResumeError, RunResult, ToolRegistry
    from agentloop.testing import ScriptedModel, call, text, tool_calls

    paid: list[str] = []
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(to: str) -> str:
        """Pay."""
        paid.append(to)
        return "paid"

    @tools.tool(requires_approval=True)
    async def lookup(to: str) -> str:
        """Look up."""
        return "found"

    model = ScriptedModel([tool_calls(call("pay", {"to": "bob"}, id="c1")), text("done")])
    paused = await Agent(client=model, tools=tools).run("pay bob")
    data = json.loads(paused.to_json())
    data["pending"][0]["name"] = "lookup"
    changed = RunResult.from_json(json.dumps(data))
    assert changed.pending[0].name == "lookup"  # what the reviewer sees
    with pytest.raises(ResumeError, match="another tool"):
        await Agent(client=model, tools=tools).resume(changed, approvals={"c1": True})
    assert paid == []


# --- `agentloop runs` on a journal edited by hand ---------------------------------------------------

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"  # retitle, clear the screen, a C1 CSI


def test_agentloop_runs_prints_a_tampered_journals_fields_escaped(tmp_path: Path) -> None:
    """README: "Text from the model or the journal is printed with its control characters
    escaped". Before: `agentloop runs list` / `show` escaped the run id, model and texts, but
    printed a run's status, its step counts and an end entry's stop reason raw (SQLite stores
    text in an INTEGER column): a journal retitled and cleared the user's terminal."""
    import io
    import json
    import sqlite3

    from helpers import runs_main

    from agentloop import Agent, SQLiteJournal
    from agentloop.testing import ScriptedModel, text

    path = str(tmp_path / "runs.db")

    async def make() -> None:
        journal = SQLiteJournal(path)
        try:
            await Agent(client=ScriptedModel([text("done")]), journal=journal).run("hi", run_id="r")
        finally:
            journal.close()

    anyio.run(make)
    con = sqlite3.connect(path)
    con.execute("UPDATE agentloop_runs SET status = ?, steps = ?", (ESCAPES + "status", ESCAPES + "steps"))
    con.execute("UPDATE agentloop_entries SET step = ? WHERE kind = 'model'", (ESCAPES + "step",))
    end = json.dumps({"stop_reason": ESCAPES + "stop", "output": "done"})
    con.execute("UPDATE agentloop_entries SET data = ? WHERE kind = 'end'", (end,))
    con.commit()
    con.close()
    for argv in (["list", "--journal", path], ["show", "r", "--journal", path]):
        out, err = io.StringIO(), io.StringIO()
        assert runs_main(argv, out=out, err=err) == 0
        shown = out.getvalue() + err.getvalue()
        assert not any(c in shown for c in "\x1b\x07\x9b"), (argv[0], shown)
        assert "\\x1b]0;pwned\\x07" in shown  # shown, escaped


# --- a tool definition no request can carry --------------------------------------------------------


def _surrogate_tools() -> dict[str, Any]:
    async def plain() -> str:
        return "x"

    async def documented(city: str) -> str:
        return city

    documented.__doc__ = "Weather.\n\nArgs:\n    city: the city (\udcff)\n"

    async def literal(unit: Literal["c", "\udcff"]) -> str:
        return unit

    async def default(city: str = "\udcff") -> str:
        return city

    return {
        "description=": lambda tools: tools.register(plain, description="Weather \udcff"),
        "docstring Args": lambda tools: tools.register(documented),
        "Literal value": lambda tools: tools.register(literal),
        "default": lambda tools: tools.register(default),
    }


@pytest.mark.parametrize("case", ["description=", "docstring Args", "Literal value", "default"])
async def test_a_tool_definition_with_a_lone_surrogate_is_refused_at_registration(case: str) -> None:
    """README: "Everything is checked at registration ... raises ToolDefinitionError then, never
    mid-run". Before: a description (or a docstring read as one), a parameter's description, a
    Literal value or a default holding a lone surrogate (text decoded with 'surrogateescape')
    registered fine, then every run failed at its first request with a raw TypeError from the
    JSON codec. Now registration refuses it, naming the tool."""
    from agentloop import ToolDefinitionError, ToolRegistry

    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="valid Unicode"):
        _surrogate_tools()[case](tools)
    assert not list(tools.names)


# --- an output schema no request can carry -----------------------------------------------------------


def _deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


OUTPUT_TYPES = {
    "JsonSchema 5,000 deep": lambda: _jsonschema(_deep_schema(5000)),
    "a dict 5,000 deep": lambda: _deep_schema(5000),
    "a lone surrogate in the schema": lambda: _jsonschema({"type": "object", "description": "\udcff"}),
    "a lone surrogate in the name": lambda: _jsonschema({"type": "object"}, name="out\udcff"),
}


def _jsonschema(schema: dict[str, Any], name: str = "out") -> Any:
    from agentloop import JsonSchema

    return JsonSchema(schema, name=name)


@pytest.mark.parametrize("case", sorted(OUTPUT_TYPES))
def test_an_output_schema_no_request_can_carry_is_refused_at_construction(case: str) -> None:
    """README: "Every argument is checked at construction". Before: `output_type=` a schema
    nested 5,000 deep raised a raw RecursionError from jsonschema's check_schema, and one holding
    a lone surrogate was accepted, then every run failed at its first request with a raw
    TypeError. Now each is a ConfigurationError naming output_type, as a tool's schema is a
    ToolDefinitionError at registration."""
    from agentloop import Agent, ConfigurationError
    from agentloop.testing import ScriptedModel

    with pytest.raises(ConfigurationError, match="output_type"):
        Agent(client=ScriptedModel([]), output_type=OUTPUT_TYPES[case]())


# --- a failed run's error text in the journal --------------------------------------------------------


async def test_a_journaled_run_failing_with_a_lone_surrogate_raises_its_own_error(tmp_path: Path) -> None:
    """Before: a journaled run that failed (here: its history processor raised, quoting a file
    name decoded with 'surrogateescape') journaled a `failed` entry with the error's text; the
    journal's codec refused the lone surrogate and a raw TypeError replaced the run's own error.
    Now the run raises its own error and the entry holds the text with U+FFFD."""
    from agentloop import Agent, History, SQLiteJournal
    from agentloop.testing import ScriptedModel

    def summarise(ctx: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise ValueError("cannot read notes-\udcff.txt")

    journal = SQLiteJournal(str(tmp_path / "runs.db"))
    try:
        agent = Agent(
            client=ScriptedModel([text("done")]), history=History(processor=summarise), journal=journal
        )
        with pytest.raises(ValueError, match="cannot read notes"):
            await agent.run("hi", run_id="r")
        (failed,) = [e for e in (await journal.load("r")).entries if e.kind == "failed"]
    finally:
        journal.close()
    assert failed.data["message"] == "cannot read notes-\ufffd.txt"


# --- an override nested deeper than the journal reads --------------------------------------------------


def _nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


async def _paused_payment(path: Path) -> Any:
    from agentloop import Agent, SQLiteJournal, ToolRegistry
    from agentloop.testing import ScriptedModel, call, tool_calls

    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    journal = SQLiteJournal(str(path))
    model = ScriptedModel([tool_calls(call("pay", {"amount": 1}, id="c1")), text("done")])
    agent = Agent(client=model, tools=tools, journal=journal)
    assert (await agent.run("pay", run_id="r")).stop_reason == "approval_required"
    return agent, journal


@pytest.mark.parametrize("levels", [198, 250])
async def test_an_override_nested_deeper_than_the_journal_reads_is_refused(
    levels: int, tmp_path: Path
) -> None:
    """Before: Override(value) nested 198-253 levels was accepted: the run finished, the journal
    wrote the `approvals` entry (orjson writes 254 levels) but every later read refused it (200),
    so the run was lost to `agentloop runs show`, the inspector and resume (JournalCorruptError).
    Now the decision is refused before anything is stored (ResumeError), and the run can still
    be decided."""
    from agentloop import Override, ResumeError

    agent, journal = await _paused_payment(tmp_path / "runs.db")
    try:
        with pytest.raises(ResumeError, match="nested deeper"):
            await agent.resume("r", approvals={"c1": Override(_nested(levels))})
        await journal.load("r")  # still readable
        assert (await agent.resume("r", approvals={"c1": Override({"paid": True})})).output == "done"
    finally:
        journal.close()


@pytest.mark.parametrize("levels", [250, 3000])
async def test_the_inspectors_override_form_refuses_a_value_nested_too_deep(
    levels: int, tmp_path: Path
) -> None:
    """Before: in `agentloop ui`, an override of 250 nested brackets was journaled and the run's
    page answered 500 from then on; one of 3,000 (it fits in the 64 KiB form) was a 500 at once
    (a raw RecursionError from json.loads). Now both are refused (409) and the page still shows."""
    pytest.importorskip("starlette")
    import re

    import httpx

    from agentloop.ui import create_app

    path = tmp_path / "runs.db"
    _, journal = await _paused_payment(path)
    journal.close()
    app = create_app(str(path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/runs/r")).text).group(1)  # type: ignore[union-attr]
            value = "[" * levels + "]" * levels
            form = {"call_id": "c1", "decision": "override", "value": value, "csrf": csrf}
            assert (await c.post("/decide/r", data=form)).status_code == 409
            assert (await c.get("/runs/r")).status_code == 200


# --- a conversation nested deeper than anything can read back --------------------------------------------


def _deep_message(levels: int) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for _ in range(levels - 4):  # the message, its content list, the part and image_url are 4 levels
        detail = {"a": detail}
    part = {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png", "detail": detail}}
    return {"role": "user", "content": [part]}


async def test_a_conversation_nested_deeper_than_a_journal_reads_is_refused_up_front(tmp_path: Path) -> None:
    """Before: a message nested 200-250 levels passed run()'s check (orjson writes 254) and the
    run finished, but its journal could never be read again (JournalCorruptError: the run was lost
    to runs show, the inspector and resume), nor could `result.to_json()` or `messages_to_json`'s
    text be read back. Now it is a ConversationError before anything is sent or journaled; a
    message within the bound still runs and reads back."""
    from agentloop import Agent, ConversationError, RunNotFoundError, SQLiteJournal, messages_to_json
    from agentloop.testing import ScriptedModel

    model = ScriptedModel([text("done")])
    journal = SQLiteJournal(str(tmp_path / "runs.db"))
    try:
        agent = Agent(client=model, journal=journal)
        with pytest.raises(ConversationError, match="nested deeper"):
            await agent.run(messages=[_deep_message(200)], run_id="deep")
        with pytest.raises(ConversationError, match="nested deeper"):
            messages_to_json([_deep_message(200)])
        with pytest.raises(RunNotFoundError):
            await journal.load("deep")  # nothing journaled
        result = await agent.run(messages=[_deep_message(120)], run_id="fine")
        await journal.load("fine")
    finally:
        journal.close()
    assert result.output == "done"
    assert type(result).from_json(result.to_json()).output == "done"


# --- tool calls streamed without an index ----------------------------------------------------------------


def _indexless_stream(n: int) -> bytes:
    import json

    events = []
    for start in range(0, n, 1000):
        calls = [
            {"id": f"c{k}", "function": {"name": "f", "arguments": "{}"}}
            for k in range(start, min(n, start + 1000))
        ]
        events.append({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body


async def test_many_tool_calls_streamed_without_an_index_keep_their_order() -> None:
    """Before: a fragment without an index (some OpenAI-compatible servers) found its call by
    scanning every slot, and the next slot with max(): quadratic in the calls, on the event loop.
    870 KiB of index-less calls held the loop (every run of the process) 7.8 s; 224 ms after. The
    time is a benchmark's (`benchmarks/bench_stall.py --streamed`), not a test's: here, that the
    dict placement keeps every call, in order, over a few thousand."""
    n = 3_000
    async with RawServer(respond(_indexless_stream(n))) as server, client(server.url) as c:
        turn = await ask(c, stream=True)
    calls = turn.message["tool_calls"]
    assert [c["id"] for c in calls] == [f"c{k}" for k in range(n)]


def test_index_less_fragments_still_continue_their_call() -> None:
    """The linear placement keeps the lenient rules: a fragment without an id continues the last
    call, one with a known id continues that call, a new id opens the next slot."""
    import json

    deltas = [
        [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}],
        [{"id": "b", "function": {"name": "g", "arguments": "{"}}],  # a new id: the next slot
        [{"function": {"arguments": "}"}}],  # no id: the last call
        [{"id": "a", "function": {"arguments": "1}"}}],  # a known id: that call
    ]
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": d}}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body

    async def go() -> Any:
        async with RawServer(respond(raw)) as server, client(server.url) as c:
            return await ask(c, stream=True)

    turn = anyio.run(go)
    got = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in turn.message["tool_calls"]]
    assert got == [("a", "f", '{"x":1}'), ("b", "g", "{}")]


@pytest.mark.parametrize(
    ("index", "shown"),
    [([1], "a JSON array [1]"), ({"i": 1}, 'a JSON object {"i":1}')],
    ids=["a list", "an object"],
)
async def test_an_anthropic_tool_block_with_an_unhashable_index_is_not_a_crash(
    index: Any, shown: str
) -> None:
    """Before: a streamed `content_block_start` of a tool_use block whose "index" was a list or an
    object raised a raw TypeError (unhashable) out of FluxClient.request. Now it is the typed error
    of any value of the wrong JSON type in a stream (`_wire/shapes.py`), naming the field and what
    was sent, as for an OpenAI call's index (no delta could reach such a block anyway)."""
    import json

    from agentloop import APIResponseError

    def event(kind: str, data: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    block = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Lisbon"}}
    body = (
        event(
            "message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}
        )
        + event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )
        + event("content_block_stop", {"type": "content_block_stop", "index": index})
        + event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}})
        + event("message_stop", {"type": "message_stop"})
    )
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body
    async with RawServer(respond(raw)) as server, client(server.url, wire="anthropic") as c:
        with pytest.raises(APIResponseError) as caught:
            await ask(c, stream=True)
    assert f"a content_block_start whose `index` is {shown}, not a position" in str(caught.value)


# --- a list or an object where a name was expected (unhashable: not a set's member) ------------------

UNHASHABLE_MESSAGES = {
    "a role that is a list": [{"role": ["user"], "content": "hi"}],
    "a part type that is a list": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}],
    "a part type that is an object": [{"role": "user", "content": [{"type": {"t": 1}, "text": "hi"}]}],
    "a thinking block type that is a list": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok", "thinking_blocks": [{"type": ["thinking"], "thinking": "t"}]},
        {"role": "user", "content": "again"},
    ],
}


@pytest.mark.parametrize("case", sorted(UNHASHABLE_MESSAGES))
async def test_a_caller_message_with_a_list_for_a_name_is_a_conversation_error(case: str) -> None:
    """Before: run(messages=...) looked a message's role, a content part's type and a thinking
    block's type up in a frozenset; a list or an object there is unhashable, and a raw TypeError
    came out of Agent.run instead of the ConversationError naming the message."""
    from agentloop import Agent, ConversationError
    from agentloop.testing import ScriptedModel

    with pytest.raises(ConversationError, match=r"messages\[\d\]"):
        await Agent(client=ScriptedModel([text("done")])).run(messages=UNHASHABLE_MESSAGES[case])


def _anthropic_events(overrides: dict[str, Any]) -> bytes:
    """A streamed Anthropic answer (a tool call and a text) with `overrides` put into its events:
    {"<event index>.<key>[.<key>]": value}."""
    import json

    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    for where, value in overrides.items():
        first, *keys = where.split(".")
        target: Any = events[int(first)]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    body = b"".join(b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"2.type": {"t": 1}}, None),
        ({"3.content_block.type": ["thinking"]}, 'a content block whose `type` is a JSON array ["thinking"]'),
        ({"1.type": ["content_block_start"]}, "never started"),
    ],
    ids=["an event type that is an object", "a block type that is a list", "a start's type that is a list"],
)
async def test_an_anthropic_stream_with_a_list_for_a_type_is_not_a_crash(
    overrides: dict[str, Any], error: str | None
) -> None:
    """Before: an event whose "type" was an object, or a content block whose "type" was a list,
    raised a raw TypeError out of FluxClient.request (frozenset lookups). Now such an event is
    not one of the answer's (a router's own events are skipped the same way), and a delta for a
    block so skipped is the typed error of any delta for a block never started; a block whose
    type is not a string is the typed error of a block of the wrong shape (it may have been a
    call: never dropped)."""
    from agentloop import APIResponseError

    async with (
        RawServer(respond(_anthropic_events(overrides))) as server,
        client(server.url, wire="anthropic") as c,
    ):
        if error is not None:
            with pytest.raises(APIResponseError) as caught:
                await ask(c, stream=True)
            assert error in str(caught.value)
            return
        turn = await ask(c, stream=True)
    assert turn.message.get("tool_calls")  # the text delta (the skipped event) is gone, the call kept


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (1, "a JSON number 1"),
        (["a"], 'a JSON array ["a"]'),
        ({"a": 1}, 'a JSON object {"a":1}'),
        (True, "a JSON boolean true"),
    ],
    ids=["an int", "a list", "an object", "a bool"],
)
async def test_an_anthropic_text_block_started_with_a_text_that_is_not_a_str(text: Any, shown: str) -> None:
    """Before: a text block whose content_block_start carried a text that is not a str (1) was
    kept, and assembling the turn raised a raw TypeError out of FluxClient.request (str.join; 4 of
    4 failed before, found by the property below). Now it is the typed error of any value of the
    wrong JSON type in a stream (`_wire/shapes.py`: a text_delta's piece that is not a str too),
    naming the field and what was sent."""
    from agentloop import APIResponseError

    async with (
        RawServer(respond(_anthropic_events({"1.content_block.text": text}))) as server,
        client(server.url, wire="anthropic") as c,
    ):
        with pytest.raises(APIResponseError) as caught:
            await ask(c, stream=True)
    assert f"a text block whose `text` is {shown}, not a string" in str(caught.value)


async def test_an_anthropic_answer_with_a_list_for_a_block_type_is_not_a_crash() -> None:
    """Before: a whole (not streamed) answer with a content block whose "type" was a list raised
    a raw TypeError from the decoder. Now it is the typed error of a block of the wrong shape,
    as in a stream: a block of an unknown *string* type is skipped (a new kind of block), one
    whose type is no string at all is a malformed answer (it may have been a call)."""
    import json

    from agentloop import Agent, APIResponseError, FluxClient, RetryPolicy
    from agentloop.testing import FakeFluxRouter, raw

    body = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "content": [{"type": ["thinking"], "thinking": "x"}, {"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    async with FakeFluxRouter([raw(200, json.dumps(body))]) as router:
        retry = RetryPolicy(max_retries=0)
        async with FluxClient(
            base_url=router.anthropic_url, api_key="sk-round5", stream=False, retry=retry
        ) as c:
            with pytest.raises(
                APIResponseError, match=r'a content block whose `type` is a JSON array \["thinking"\]'
            ):
                await Agent(client=c).run("hi")


async def test_an_executor_answering_a_list_for_a_status_ends_the_call_crashed() -> None:
    """README: "An executor that raises or returns something else ends the call as `crashed`,
    never the run." Before: an outcome whose status was a list raised a raw TypeError (a frozenset
    lookup) out of Agent.run."""
    from agentloop import Agent, build_tool
    from agentloop.testing import ScriptedModel, call, tool_calls

    class Outcome:
        def __init__(self) -> None:
            self.status, self.content = ["ok"], "42"

    class Executor:
        async def call(self, ref: str, arguments: dict[str, Any], limits: Any) -> Any:
            return Outcome()

    def answer() -> str:
        """The answer."""
        return "42"

    tool = build_tool(answer, name="answer", sandbox=Executor())
    model = ScriptedModel([tool_calls(call("answer", {})), text("done")])
    result = await Agent(client=model, tools=[tool]).run("hi")
    assert (result.tool_calls[0].status, result.output) == ("crashed", "done")


# --- model_settings a request cannot carry ------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"budget": [float("-inf")]}])
async def test_model_settings_with_a_nan_or_an_infinity_are_refused(value: Any) -> None:
    """README: `model_settings` "checked at construction". Before: {"temperature": nan} was
    accepted and sent as `"temperature": null` (the codec writes NaN and infinities as null): the
    setting silently fell back to the router's default. Now it is a ConfigurationError, at
    construction and per run."""
    from agentloop import Agent, ConfigurationError
    from agentloop.testing import ScriptedModel

    with pytest.raises(ConfigurationError, match="NaN or an infinity"):
        Agent(client=ScriptedModel([text("done")]), model_settings={"temperature": value})
    agent = Agent(client=ScriptedModel([text("done")]))
    with pytest.raises(ConfigurationError, match="NaN or an infinity"):
        await agent.run("hi", model_settings={"temperature": value})


# --- property: any JSON value anywhere in one event of a stream ------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _openai_events() -> list[dict[str, Any]]:
    tool = {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x"'}}
    return [
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "o"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [tool]}}]},
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    ]


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _places(v, (*path, i))
    return out


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@settings(max_examples=examples(25), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_value_anywhere_in_a_stream_event_ends_typed(
    anyio_backend: str, wire: str, data: Any
) -> None:
    """Hostile router: one event of a valid stream (a text, a tool call, usage) gets any JSON value
    at any place of its data. FluxClient.request returns a turn or raises an AgentloopError, never
    anything else (the unhashable "type" and "index" holes above were of this kind)."""
    import json

    from agentloop import AgentloopError

    if wire == "openai":
        events: list[dict[str, Any]] = _openai_events()
        tail = b"data: [DONE]\n\n"
    else:
        raw_head = _anthropic_events({}).split(b"\r\n\r\n", 1)[1]
        events = [json.loads(line[6:]) for line in raw_head.split(b"\n") if line.startswith(b"data: ")]
        tail = b""
    i = data.draw(st.integers(0, len(events) - 1))
    path = data.draw(st.sampled_from(_places(events[i])[1:]))
    target: Any = events[i]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON_VALUES)
    body = b"".join(b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events) + tail
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body

    async def go() -> None:
        async with RawServer(respond(raw)) as server, client(server.url, wire=wire) as c:
            with contextlib.suppress(AgentloopError):
                await ask(c, stream=True)

    anyio.run(go, backend=anyio_backend)
