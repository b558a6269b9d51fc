"""Round 4 of the outside-in attack: hostile servers, tools, journals and callers, through the public API.

Each test is the exact repro of a hole this round found (the docstring says what it did before)
or a README claim no other test tried to break. Raw servers are the byte-exact ones of
test_http_lean_hostile; nothing leaves the loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from test_http_lean_hostile import RawServer, ask, client, read_request

from agentloop import InputBudget, RetryPolicy
from agentloop.testing import FakeFluxRouter, text

pytestmark = pytest.mark.anyio

TRANSPORTS = ["lean", "httpcore"]
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
OPENAI_STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"o"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"k"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
STREAMS = {"openai": OPENAI_STREAM, "anthropic": ANTHROPIC_STREAM}
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def then_hold_open(raw: bytes) -> Any:
    """A script: answer with `raw`, then keep the connection open and silent (a stuck proxy)."""

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(raw)
        await anyio.sleep_forever()

    return script


def wire_client(url: str, wire: str, **kw: Any) -> Any:
    return client(url, wire=wire, **kw)


# --- a whole stream, then a connection held open ------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("framing", ["until-close", "chunked-unterminated"])
async def test_a_whole_stream_then_a_connection_held_open_is_still_the_answer(
    transport: str, wire: str, framing: str
) -> None:
    """Before: the server sent the whole answer, its last event ([DONE] / message_stop) included,
    then kept the connection open: the client went on reading until stream_idle_timeout (300 s
    by default) and then raised APITimeoutError: the complete answer was lost, and not retried
    (deltas had reached the caller). Now the answer ends at the wire's last event."""
    body = STREAMS[wire]
    raw = SSE_HEAD + body if framing == "until-close" else CHUNKED_HEAD + b"%x\r\n%b\r\n" % (len(body), body)
    budget = InputBudget(stream_idle_timeout=0.2)  # the old failure, fast; the drain takes at most this
    async with RawServer(then_hold_open(raw)) as server:
        async with wire_client(server.url, wire, transport=transport, input_budget=budget) as c:
            turn = await ask(c, stream=True)
    assert turn.message["content"] == "ok"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_events_after_done_are_not_part_of_the_answer(transport: str) -> None:
    """Before: content sent after `data: [DONE]` was appended to the answer ('okEVIL')."""
    late = b'data: {"choices":[{"index":0,"delta":{"content":"EVIL"}}]}\n\ndata: [DONE]\n\n'
    raw = SSE_HEAD + OPENAI_STREAM + late

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(raw)

    async with RawServer(script) as server, client(server.url, transport=transport) as c:
        turn = await ask(c, stream=True)
    assert turn.message["content"] == "ok"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_streamed_answers_still_reuse_their_connection(transport: str, wire: str) -> None:
    """The answer ends at the wire's last event, but the body's tail (the chunked terminator) is
    still read, so a well-behaved router's connection goes back to the pool."""
    async with FakeFluxRouter([text("hello") for _ in range(4)]) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with client(url, transport=transport) as c:
            for _ in range(4):
                assert (await ask(c, stream=True)).message["content"] == "hello"
    assert {r.connection for r in router.requests} == {1}


# --- Retry-After in another script's digits -------------------------------------------------------

NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())


@settings(max_examples=examples(50))
@given(
    digits=st.text(NON_ASCII_DIGITS, min_size=1, max_size=3),
    header=st.sampled_from(["retry-after", "retry-after-ms"]),
)
def test_a_retry_after_in_non_ascii_digits_is_not_a_wait(digits: str, header: str) -> None:
    """Before: Python's float() reads other scripts' digits (Arabic-Indic '10' is 10.0), so a
    Retry-After the httpx transports decoded as UTF-8 made the client wait up to max_retry_after
    where the lean transport (Latin-1) did not: a server picked the wait with digits RFC 9110
    does not allow. Now only ASCII numbers are read."""
    policy = RetryPolicy(jitter=0)
    assert policy.delay(0, {header: digits}) == policy.delay(0, {})
    assert policy.delay(0, {"retry-after": "1_0"}) == policy.delay(0, {})
    assert policy.delay(0, {"retry-after": "10"}) == 10.0  # an ASCII one still counts


# --- a router's error text on the terminal ---------------------------------------------------------

HOSTILE_ERROR = "\x1b]0;pwned\x07\x1b[2Jcleared \x9b31m"  # retitle, clear the screen, a C1 CSI


def test_a_routers_error_text_reaches_the_terminal_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: "Text from the model or the journal is printed with its control characters
    escaped". Before: `agentloop run` printed a router's error message (a 400's JSON
    `error.message`) raw on stderr: the router retitled the user's terminal and cleared it."""
    from agentloop.cli import main
    from agentloop.testing import error

    monkeypatch.setenv("FLUX_API_KEY", "sk-round4-terminal-key")
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        router = portal.call(FakeFluxRouter, [error(400, HOSTILE_ERROR)])
        with portal.wrap_async_context_manager(router):
            assert main(["run", "--base-url", router.base_url, "hi"]) == 2
    err = capsys.readouterr().err
    assert "BadRequestError" in err and "cleared" in err
    assert not any(c in err for c in "\x1b\x07\x9b")
    assert "\\x1b]0;pwned\\x07" in err  # shown, escaped


# --- tampered journals -----------------------------------------------------------------------------


def _shout(s: str) -> str:
    return s.upper()


async def _journaled_run(path: str) -> None:
    from agentloop import Agent, SQLiteJournal
    from agentloop.testing import ScriptedModel

    journal = SQLiteJournal(path)
    try:
        await Agent(client=ScriptedModel([text("done")]), journal=journal).run("q", run_id="r1")
    finally:
        journal.close()


def _tamper(path: str, *sql: str) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        for statement in sql:
            db.execute(statement)


@pytest.mark.parametrize(
    ("pid", "expires_at"),
    [(1, "'never'"), (9223372036854775807, "1"), (0, "1"), (-1, "1"), (1, "x'00ff'")],
    ids=["expiry-text", "pid-past-the-kernel", "pid-0", "pid-minus-1", "expiry-blob"],
)
async def test_a_tampered_lease_row_is_journal_corruption_not_a_raw_error(
    tmp_path: Any, pid: int, expires_at: str
) -> None:
    """Before: resuming a run whose lease row had an expiry in text raised a raw TypeError ('>'
    not supported between str and float), a pid past C's range a raw OverflowError out of
    os.kill, and pid 0 / -1 (`kill(0, 0)` is this process group) held the run locked forever."""
    import socket

    from agentloop import Agent, JournalCorruptError, SQLiteJournal
    from agentloop.testing import ScriptedModel

    path = str(tmp_path / "runs.db")
    await _journaled_run(path)
    _tamper(
        path,
        f"INSERT INTO agentloop_leases VALUES ('r1', 't', '{socket.gethostname()}', {pid}, {expires_at})",
    )
    journal = SQLiteJournal(path)
    try:
        with pytest.raises(JournalCorruptError, match="damaged run lease"):
            await Agent(client=ScriptedModel([text("again")]), journal=journal).resume("r1")
    finally:
        journal.close()


async def test_run_times_no_clock_can_show_are_still_shown(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a run row with created_at=1e18 made `agentloop runs list` end in a raw OSError
    traceback (localtime: value too large) and the inspector's pages escape as a bare 500
    (1e308: OverflowError, which its damaged-data handler did not catch)."""
    pytest.importorskip("starlette")
    import httpx

    from agentloop.cli import main
    from agentloop.ui import create_app

    path = str(tmp_path / "runs.db")
    await _journaled_run(path)
    for when in ("1e18", "1e308", "-1e308"):
        _tamper(path, f"UPDATE agentloop_runs SET created_at={when}, updated_at={when}")
        _tamper(path, f"UPDATE agentloop_entries SET at={when}")
        assert main(["runs", "list", "--journal", path]) == 0
        assert "r1" in capsys.readouterr().out
        transport = httpx.ASGITransport(app=create_app(path))  # raises what the app does not handle
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            for url in ("/", "/runs/r1"):
                assert (await web.get(url)).status_code == 200


def test_a_deadline_no_clock_can_show_still_ends_the_run_as_a_time_limit() -> None:
    """Before: RunLimits(deadline=-1e18) (a finite Unix time, accepted) ended the run in a raw
    OSError from writing the TimeLimitExceeded message, the partial result lost with it."""
    from agentloop import Agent, RunLimits, TimeLimitExceeded
    from agentloop.testing import ScriptedModel

    agent = Agent(client=ScriptedModel([text("never")]), limits=RunLimits(deadline=-1e18))
    with pytest.raises(TimeLimitExceeded, match="Unix time") as info:
        agent.run_sync("hi")
    assert info.value.result.messages[0]["content"] == "hi"


# --- text that is not Unicode, from the caller -------------------------------------------------------

LONE = "caf\udce9"  # what b"caf\xe9".decode("utf-8", "surrogateescape") gives


@pytest.mark.parametrize(
    "where", ["prompt", "run_id", "model", "run-model", "instructions", "run-instructions"]
)
async def test_caller_text_with_a_lone_surrogate_is_refused_up_front(where: str) -> None:
    """Before: a prompt, model or instructions holding a lone surrogate (surrogateescape-decoded
    input) raised the JSON codec's raw TypeError out of the first request; a run_id raised a raw
    UnicodeEncodeError out of the journal. Now a typed error names the field and the index."""
    from agentloop import Agent, ConfigurationError, ConversationError, FluxClient, SQLiteJournal

    async with FakeFluxRouter([text("never")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="sk-round4-surrogates") as c:
            journal = SQLiteJournal(":memory:")
            kwargs: dict[str, Any] = {}
            agent_kwargs: dict[str, Any] = {}
            prompt = "hi"
            if where == "prompt":
                prompt = LONE
            elif where == "run_id":
                kwargs["run_id"] = LONE
            elif where.startswith("run-"):
                kwargs[where[4:]] = LONE
            elif where == "instructions-function":
                agent_kwargs["instructions"] = lambda ctx: LONE
            else:
                agent_kwargs[where] = LONE
            expected = ConversationError if where == "prompt" else ConfigurationError
            with pytest.raises(expected, match="lone surrogate"):
                agent = Agent(client=c, journal=journal, **agent_kwargs)
                await agent.run(prompt, **kwargs)
            with pytest.raises(ConfigurationError, match="lone surrogate"):
                await Agent(client=c, journal=journal).resume(LONE)
            journal.close()
    assert router.requests == []


async def test_a_refused_run_leaves_no_journal_transaction_open_for_the_next(tmp_path: Any) -> None:
    """Before: a run refused inside the journal's transaction (RunLockedError: a live lease row
    for its run_id) left that transaction open, so the NEXT run on the same journal failed with
    JournalCorruptError 'damaged or not an agentloop journal: cannot start a transaction within a
    transaction'. One caller's refused run broke another's."""
    import os
    import socket

    from agentloop import Agent, RunLockedError, SQLiteJournal
    from agentloop.testing import ScriptedModel

    path = str(tmp_path / "runs.db")
    await _journaled_run(path)
    _tamper(
        path,
        f"INSERT INTO agentloop_leases VALUES ('taken', 't', '{socket.gethostname()}', {os.getpid()}, 1)",
    )
    journal = SQLiteJournal(path)
    try:
        with pytest.raises(RunLockedError):
            await Agent(client=ScriptedModel([text("no")]), journal=journal).run("q", run_id="taken")
        result = await Agent(client=ScriptedModel([text("yes")]), journal=journal).run("q", run_id="next")
    finally:
        journal.close()
    assert result.output == "yes"


# --- hostile tools in the sandboxes (these held: kept so they keep holding) ----------------------------

SANDBOX_MODES = [
    "process",
    pytest.param("isolated", marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bwrap here")),
]
EXPECTED = {  # tool → (status, a piece of the model's text)
    "raise_bad_str": ("raised", "BadStr"),
    "raise_huge_str": ("raised", "HugeStr"),
    "raise_system_exit": ("raised", "SystemExit: 3"),
    "raise_keyboard_interrupt": ("raised", "KeyboardInterrupt"),  # the child's, not the user's Ctrl-C
    "exit_now": ("crashed", "without a result"),
    "close_all_fds": ("crashed", "without a result"),
    "block_sigterm_and_sleep": ("timeout", "timed out"),
    "bad_repr_result": ("invalid_result", "cannot be encoded"),
    "recursive_result": ("invalid_result", "cannot be encoded"),
    "deep_result": ("invalid_result", "cannot be encoded"),
    "huge_result": ("output_limit", "yyyy"),
    "kill_parent_group": ("raised", "ProcessLookupError"),
    "non_utf8_result": ("ok", '"//4AIHJhdyBieXRlcw=="'),  # bytes: base64
    "surrogate_result": ("ok", "half ? a pair"),
}


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if pid.isdigit() and int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == me:
                out.add(int(pid))
    return out


@pytest.mark.parametrize("mode", SANDBOX_MODES)
async def test_hostile_tools_end_typed_and_leave_no_process(mode: str) -> None:
    """Exceptions whose str raises or is 4 MB, SystemExit / KeyboardInterrupt / os._exit in the
    child, a tool that closes every fd, blocks SIGTERM and sleeps, returns a recursive, 100,000-deep,
    unprintable, 664 MB or non-UTF-8 value, or kills its parent's group: each call ends in its own
    typed outcome, the next call works, and no process of ours is left (zombies included)."""
    import hostile_tools4 as h4

    from agentloop import Limits, ToolRegistry, run_tool_call

    before = _children()
    async with ToolRegistry(sandbox=mode, limits=Limits(timeout=30)) as tools:
        for name in EXPECTED:
            limits = {
                "block_sigterm_and_sleep": Limits(timeout=0.5),
                "huge_result": Limits(output_bytes=65536),
            }.get(name)
            tools.register(getattr(h4, name), limits=limits)
        for name, (status, piece) in EXPECTED.items():
            record = await run_tool_call(tools, name, {})
            assert (record.status, piece in record.content) == (status, True), (name, record.content[:300])
    assert _children() <= before


def test_verbose_log_lines_escape_what_the_model_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held (kept so it keeps holding): with `agentloop -v run`, a tool that raises quoting the
    model's argument logs "tool raised" with its traceback; the model's ESC sequences in it must
    not reach the terminal raw (structlog's console renderer quotes a str value with spaces
    through repr; one without spaces it prints as it is, so no such value may carry model text)."""
    import structlog

    from agentloop.cli import main
    from agentloop.testing import call, tool_calls

    monkeypatch.setenv("FLUX_API_KEY", "sk-round4-terminal-key")
    script = [tool_calls(call("echo_raise", {"text": HOSTILE_ERROR})), text("done")]
    try:
        with anyio.from_thread.start_blocking_portal("asyncio") as portal:
            router = portal.call(FakeFluxRouter, script)
            with portal.wrap_async_context_manager(router):
                argv = [
                    "-v",
                    "run",
                    "--base-url",
                    router.base_url,
                    "--tool",
                    "hostile_tools4:echo_raise",
                    "hi",
                ]
                assert main(argv) == 0
    finally:
        structlog.reset_defaults()  # main(-v) configured structlog for this process
    captured = capsys.readouterr()
    assert "tool raised" in captured.err and "no such city" in captured.err
    assert not any(c in captured.out + captured.err for c in "\x1b\x07\x9b")
