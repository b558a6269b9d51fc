"""Pre-release adversarial review (issue 16): the exact repros of what broke, through the public
API, on asyncio and trio. Each test is a hostile input that once stalled the loop, echoed
megabytes back, or crashed; it now ends in a bounded error fed back or a typed exception."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from wirehelp import WIRES, make_client, run_or_stream

from agentloop import Agent, InputBudget, OutputValidationError
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio


@dataclass
class Ints:
    xs: list[int]


def _feedback(exc: OutputValidationError) -> list[str]:
    """What the model was told about its invalid answers (tool results or user messages)."""
    msgs = exc.result.messages
    return [m["content"] for m in msgs[1:] if m["role"] in ("tool", "user")]


@pytest.mark.parametrize("how", ["run", "stream"])
@pytest.mark.parametrize("wire", WIRES)
async def test_invalid_output_of_100k_errors_is_bounded(wire: str, how: str) -> None:
    # Repro: a final_result of 100,000 wrong items was validated with every error collected on the
    # event loop (48 s for 150,000) and its 4.4 MB error list was fed back to the model.
    bad = {"xs": ["s"] * 100_000}
    async with FakeFluxRouter() as router, make_client(router, wire) as client:
        router.add(tool_calls(call("final_result", bad)), tool_calls(call("final_result", bad)))
        agent = Agent(client=client, output_type=Ints, output_mode="tool", output_retries=1)
        with pytest.raises(OutputValidationError) as info:
            await run_or_stream(agent, how, "numbers")
    told = _feedback(info.value)
    assert len(told) == 2  # one per invalid answer
    for t in told:
        assert len(t.encode()) <= InputBudget().max_error_bytes
        assert "more than 5" in t and "$.xs[0]" in t
    assert len(str(info.value)) < 4000
    assert len(info.value.errors) <= InputBudget().max_violations + 1


@pytest.mark.parametrize("wire", WIRES)
async def test_output_over_the_argument_budget_is_refused_unparsed(wire: str) -> None:
    huge = json.dumps({"xs": ["s"] * 400_000})  # ~2.4 MB, over max_argument_bytes (1 MiB)
    async with FakeFluxRouter() as router, make_client(router, wire) as client:
        router.add(tool_calls(call("final_result", huge)), tool_calls(call("final_result", {"xs": [1]})))
        agent = Agent(client=client, output_type=Ints, output_mode="tool")
        result = await agent.run("numbers")
    assert result.output == Ints([1])
    told = next(m["content"] for m in result.messages if m["role"] == "tool")
    assert "more than the limit" in told and "max_argument_bytes" in told
    assert len(told.encode()) <= InputBudget().max_error_bytes


async def test_native_output_error_text_respects_max_error_bytes() -> None:
    budget = InputBudget(max_error_bytes=512)
    bad = json.dumps({"xs": ["y" * 5000] * 50})  # each error line quotes a 5,000-character item
    async with FakeFluxRouter() as router, make_client(router, "openai") as client:
        router.add(text(bad), text('{"xs": [2]}'))
        agent = Agent(client=client, output_type=Ints, input_budget=budget)
        result = await agent.run("numbers")
    assert result.output == Ints([2])
    told = [m["content"] for m in result.messages if m["role"] == "user"][1]
    assert len(told.encode()) <= 512 and "truncated" in told


async def test_streamed_huge_native_answer_stops_partials_and_finishes() -> None:
    # Each fragment re-read the whole answer so far: a big answer in small pieces was O(n²).
    from agentloop import OutputDelta
    from agentloop._run.output_stream import PARTIAL_MAX_CHARS  # internal unit under test

    items = list(range(40_000))  # ~230 KB of JSON
    body = json.dumps({"xs": items})
    async with FakeFluxRouter() as router, make_client(router, "openai") as client:
        router.add(text(body))
        agent = Agent(client=client, output_type=Ints)
        partials = 0
        async with agent.stream("numbers") as events:
            async for event in events:
                if isinstance(event, OutputDelta):
                    partials += 1
                    assert len(json.dumps(event.output)) <= PARTIAL_MAX_CHARS + 64
                result = getattr(event, "result", None)
    assert result is not None and result.output == Ints(items)


async def test_huge_tool_arguments_do_not_stall_the_loop_in_history() -> None:
    # Repro: a 5 MB argument was parsed on the event loop to decide what the history carries
    # (`history_message`), and the 5-10 MB body too. Now both run in a worker thread; this pins
    # the outcome (a bounded error fed back, the run goes on).
    from agentloop import ToolRegistry

    reg = ToolRegistry()

    @reg.tool
    async def take(xs: list[int]) -> int:
        return len(xs)

    async with FakeFluxRouter() as router, make_client(router, "openai") as client:
        router.add(tool_calls(call("take", {"xs": ["s"] * 1_000_000})), text("done"))
        result = await Agent(client=client, tools=reg).run("go")
    assert result.output == "done"
    (record,) = result.tool_calls
    assert record.status == "invalid_arguments" and "more than the limit" in record.content
    sent = router.requests[1].json["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["arguments"].startswith('{"xs":["s"')  # kept as sent


def test_process_sandbox_without_libseccomp_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Repro: with libseccomp missing, the fork server swallowed the error and ran every call
    # without its seccomp filter, silently below README's threat table. Now registration refuses.
    import ctypes

    import sandbox_tools

    from agentloop import SandboxUnavailableError, ToolDefinitionError, ToolRegistry

    real = ctypes.CDLL

    def no_seccomp(name: object, *args: object, **kwargs: object) -> object:
        if name is not None and "seccomp" in str(name):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", no_seccomp)
    for mode in ("process", "isolated"):
        reg = ToolRegistry()
        with pytest.raises((SandboxUnavailableError, ToolDefinitionError)) as info:
            reg.register(sandbox_tools.trivial, sandbox=mode)
        assert "libseccomp2" in str(info.value), str(info.value)
        assert len(reg) == 0


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


@pytest.mark.parametrize("wire", WIRES)
async def test_hostile_tool_results_are_fed_back_not_raised(wire: str) -> None:
    # Repro: a tool raising an exception whose __str__ raises made the run raise a raw
    # RuntimeError (the default error text called str()). The others pin hostile results.
    from agentloop import ToolRegistry

    reg = ToolRegistry()

    @reg.tool
    async def unprintable() -> str:
        raise _Unprintable

    @reg.tool
    async def surrogate() -> str:
        return "half a pair: \ud800 here"

    @reg.tool
    async def binary() -> bytes:
        return b"\xff\xfe\x00"

    @reg.tool
    async def self_ref() -> dict:
        d: dict = {}
        d["d"] = d
        return d

    @reg.tool
    async def huge_message() -> str:
        raise ValueError("m" * 5_000_000)

    names = ["unprintable", "surrogate", "binary", "self_ref", "huge_message"]
    async with FakeFluxRouter() as router, make_client(router, wire) as client:
        router.add(tool_calls(*(call(n, {}) for n in names)), text("done"))
        result = await Agent(client=client, tools=reg).run("go")
        sent = router.requests[1].json["messages"]
    assert result.output == "done"
    status = {r.name: r.status for r in result.tool_calls}
    assert status == {"unprintable": "raised", "surrogate": "ok", "binary": "ok",
                      "self_ref": "invalid_result", "huge_message": "raised"}  # fmt: skip
    by_name = {r.name: r.content for r in result.tool_calls}
    assert by_name["binary"] == '"//4A"'  # bytes as base64, the form a bytes argument takes
    assert (
        "_Unprintable" in by_name["unprintable"] and "str() of the exception failed" in by_name["unprintable"]
    )
    assert len(by_name["huge_message"].encode()) <= InputBudget().max_error_bytes
    assert len(sent) >= 3  # the second request carried every result, encodable


async def test_surrogate_in_an_exception_message_is_sendable() -> None:
    from agentloop import ToolRegistry

    reg = ToolRegistry()

    @reg.tool
    async def bad_message() -> str:
        raise ValueError("lone \udc80 surrogate")

    async with FakeFluxRouter() as router, make_client(router, "openai") as client:
        router.add(tool_calls(call("bad_message", {})), text("done"))
        result = await Agent(client=client, tools=reg).run("go")
    assert result.output == "done"
    assert "lone \ufffd surrogate" in result.tool_calls[0].content


class _Opaque:
    pass


_DEEP: object = "x"
for _ in range(1000):
    _DEEP = [_DEEP]

HOSTILE_CONVERSATIONS = {
    "lone surrogate": [{"role": "user", "content": "a\ud800"}],
    "a set": [{"role": "user", "content": {1, 2}}],
    "an object": [{"role": "user", "content": [{"type": "text", "text": _Opaque()}]}],
    "bytes": [{"role": "user", "content": b"\xff"}],
    "1000 deep": [{"role": "user", "content": _DEEP}],
    "tool_calls a str": [{"role": "assistant", "content": None, "tool_calls": "zzz"}],
}


@pytest.mark.parametrize("case", list(HOSTILE_CONVERSATIONS))
@pytest.mark.parametrize("wire", WIRES)
async def test_hostile_caller_messages_are_a_conversation_error(wire: str, case: str) -> None:
    # Repro: each of these reached the wire and raised a raw TypeError / AttributeError from
    # the JSON codec or the Anthropic adapter, mid-run, instead of a ConversationError up front.
    from agentloop import ConversationError

    async with FakeFluxRouter() as router, make_client(router, wire) as client:
        router.add(text("never sent"))
        with pytest.raises(ConversationError, match=r"messages\[0\]"):
            await Agent(client=client).run("q", messages=HOSTILE_CONVERSATIONS[case])
        assert router.requests == []


@pytest.mark.parametrize(
    "damage",
    [
        "update agentloop_runs set steps='abc', created_at='yesterday'",
        """update agentloop_entries set data='{"message": 5}'""",
        """update agentloop_entries set data='{"message": {"role": "assistant", "tool_calls": [7]}}'""",
    ],
)
async def test_runs_show_of_a_journal_with_wrong_shapes_says_damaged(
    tmp_path: object, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    # Repro: valid JSON of the wrong shape in a journal made `agentloop runs show` print a raw
    # TypeError / AttributeError traceback; undecodable bytes already said "damaged data".
    import sqlite3
    from pathlib import Path

    from agentloop import SQLiteJournal
    from agentloop.cli import main
    from agentloop.testing import ScriptedModel

    path = str(Path(str(tmp_path)) / "runs.db")
    journal = SQLiteJournal(path)
    await Agent(client=ScriptedModel([text("hi")]), journal=journal).run("q", run_id="r1")
    journal.close()
    with sqlite3.connect(path) as db:
        db.execute(damage)
    assert main(["runs", "show", "r1", "--journal", path]) == 1
    err = capsys.readouterr().err
    assert "damaged data" in err and "Traceback" not in err


async def test_inspector_page_of_a_journal_with_wrong_shapes_says_damaged(tmp_path: object) -> None:
    # Repro: the same damage gave the inspector a bare "Internal Server Error" (the exception
    # escaped to Starlette); now the error page names it, escaped.
    pytest.importorskip("starlette")
    import sqlite3
    from pathlib import Path

    import httpx

    from agentloop import SQLiteJournal
    from agentloop.testing import ScriptedModel
    from agentloop.ui import create_app

    path = str(Path(str(tmp_path)) / "runs.db")
    journal = SQLiteJournal(path)
    await Agent(client=ScriptedModel([text("hi")]), journal=journal).run("q", run_id="r1")
    journal.close()
    with sqlite3.connect(path) as db:
        db.execute("""update agentloop_entries set data='{"message": 5}'""")
    transport = httpx.ASGITransport(app=create_app(path), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        page = await web.get("/runs/r1")
    assert page.status_code == 500
    assert "damaged data" in page.text and "AttributeError" in page.text


async def _any_tool(**kwargs: object) -> int:
    return 1


def test_a_schema_too_deep_to_send_is_refused_at_registration() -> None:
    # Repro: an explicit (or MCP server's) schema 5,000 levels deep raised a raw RecursionError
    # from jsonschema's check_schema at registration.
    from agentloop import ToolDefinitionError, ToolRegistry

    deep: dict = {"type": "object"}
    for _ in range(5000):
        deep = {"type": "object", "properties": {"a": deep}}
    reg = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="nested deeper than"):
        reg.register(_any_tool, name="deep", parameters=deep)
    assert len(reg) == 0


@pytest.mark.parametrize("wire", WIRES)
async def test_a_ref_cycle_schema_is_a_tool_error_not_a_recursion_error(wire: str) -> None:
    # Repro: {"$ref": a} -> b -> a registered fine, then the first call raised a raw RecursionError
    # out of Agent.run.
    from agentloop import ToolRegistry

    cycle = {
        "type": "object",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "properties": {"x": {"$ref": "#/$defs/a"}},
    }
    reg = ToolRegistry()
    reg.register(_any_tool, name="cyclic", parameters=cycle)
    async with FakeFluxRouter() as router, make_client(router, wire) as client:
        router.add(tool_calls(call("cyclic", {"x": 1})), text("done"))
        result = await Agent(client=client, tools=reg).run("go")
    assert result.output == "done"
    (record,) = result.tool_calls
    assert record.status == "invalid_arguments" and "$ref cycle" in record.content
