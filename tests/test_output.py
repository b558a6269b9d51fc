"""Structured output (issue 17, part 1): `Agent(output_type=T)` gives a validated `T` through the
final_result tool or the native response format, feeds invalid answers back with JSON paths,
bounds the retries, and keeps the conversation valid and the journal resumable. Over the
real-HTTP fake router on both wires, through run and stream, on asyncio and trio."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirehelp import (
    WIRES,
    last_tool_result,
    last_user_text,
    make_client,
    run_or_stream,
    tool_names,
    tool_params,
)

from agentloop import (
    Agent,
    ConfigurationError,
    JsonSchema,
    OutputValidationError,
    RunResult,
    SQLiteJournal,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, FunctionModel, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


@dataclass
class Line:
    item: str
    amount: float


@dataclass
class Invoice:
    """An invoice."""

    number: str
    total: float
    lines: list[Line]
    paid: bool = False


class Contact(TypedDict):
    name: str
    email: str


INVOICE = {"number": "INV-1", "total": 12.5, "lines": [{"item": "tea", "amount": 12.5}]}
EXPECTED = Invoice("INV-1", 12.5, [Line("tea", 12.5)])


def lookup_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def lookup(number: str) -> dict[str, Any]:
        return {"number": number, "total": 12.5}

    return tools


# --- the final_result tool ------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_dataclass_output_through_the_final_result_tool(
    router: FakeFluxRouter, wire: str, how: str
) -> None:
    router.add(
        tool_calls(call("lookup", {"number": "INV-1"})),
        tool_calls(call("final_result", INVOICE, id="call_f")),
    )
    async with make_client(router, wire) as client:
        agent = Agent[None, Invoice](client=client, tools=lookup_tools(), output_type=Invoice)
        result = await run_or_stream(agent, how, "Invoice INV-1?")
    assert result.output == EXPECTED and isinstance(result.output, Invoice)
    first = router.requests[0].json
    assert tool_names(first) == ["lookup", "final_result"]
    assert first["tool_choice"] in ("required", {"type": "any"})  # no text fallback: must use a tool
    assert tool_params(first, "final_result")["required"] == ["number", "total", "lines"]
    assert tool_names(router.requests[1].json) == ["lookup", "final_result"]  # still required at step 2
    assert router.requests[1].json["tool_choice"] in ("required", {"type": "any"})
    # the conversation stays valid: the final call has its tool message
    assert result.messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_f",
        "content": "Final result accepted.",
    }
    assert result.tool_calls[-1].name == "final_result" and result.tool_calls[-1].status == "ok"


@pytest.mark.parametrize("wire", WIRES)
async def test_invalid_answer_is_fed_back_with_json_paths(router: FakeFluxRouter, wire: str) -> None:
    bad = {"number": "INV-1", "total": "lots", "lines": [{"item": "tea"}]}
    router.add(tool_calls(call("final_result", bad)), tool_calls(call("final_result", INVOICE)))
    async with make_client(router, wire) as client:
        agent = Agent(client=client, output_type=Invoice, output_mode="tool")
        result = await agent.run("Invoice?")
    assert result.output == EXPECTED
    feedback = last_tool_result(router.requests[1].json)
    assert "$.total: 'lots' is not of type 'number'" in feedback
    assert "$.lines[0]: 'amount' is a required property" in feedback
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "ok"]


@pytest.mark.parametrize("wire", WIRES)
async def test_running_out_of_retries_raises_with_the_last_answer(router: FakeFluxRouter, wire: str) -> None:
    router.add(*(tool_calls(call("final_result", {"number": i})) for i in range(3)))
    async with make_client(router, wire) as client:
        agent = Agent(client=client, output_type=Invoice, output_mode="tool", output_retries=2)
        with pytest.raises(OutputValidationError) as info:
            await agent.run("Invoice?")
    e = info.value
    assert json.loads(e.last_answer) == {"number": 2} and any("$.number" in x for x in e.errors)
    assert len(router.requests) == 3 and e.result.stop_reason == "output_invalid"
    assert e.result.messages[-1]["role"] == "tool"  # a valid conversation: every call answered
    await_again = ScriptedModel([tool_calls(call("final_result", INVOICE))])
    again = await Agent(client=await_again, output_type=Invoice).run(messages=e.result.messages)
    assert again.output == EXPECTED  # the partial result continues as is


async def test_final_result_with_other_calls_ends_the_run_and_answers_every_call() -> None:
    ran: list[str] = []
    tools = ToolRegistry()

    @tools.tool
    async def side_effect() -> str:
        ran.append("x")
        return "done"

    model = ScriptedModel([tool_calls(call("side_effect", id="c1"), call("final_result", INVOICE, id="c2"))])
    result = await Agent(client=model, tools=tools, output_type=Invoice).run("go")
    assert result.output == EXPECTED and ran == []
    assert [(m["tool_call_id"], m["content"]) for m in result.messages[-2:]] == [
        ("c1", "Not run: the run ended with the final result."),
        ("c2", "Final result accepted."),
    ]


async def test_invalid_final_result_next_to_other_calls_still_runs_them() -> None:
    ran: list[str] = []
    tools = ToolRegistry()

    @tools.tool
    async def side_effect() -> str:
        ran.append("x")
        return "done"

    model = ScriptedModel(
        [
            tool_calls(call("side_effect", id="c1"), call("final_result", {"bad": 1}, id="c2")),
            tool_calls(call("final_result", INVOICE)),
        ]
    )
    result = await Agent(client=model, tools=tools, output_type=Invoice).run("go")
    assert result.output == EXPECTED and ran == ["x"]
    assert {m["tool_call_id"] for m in result.messages if m["role"] == "tool"} >= {"c1", "c2"}


async def test_plain_text_without_a_fallback_is_refused_and_retried() -> None:
    model = ScriptedModel([text("It is INV-1 for 12.5"), tool_calls(call("final_result", INVOICE))])
    result = await Agent(client=model, output_type=Invoice, output_mode="tool").run("go")
    assert result.output == EXPECTED
    assert "calling the final_result tool" in model.requests[1]["messages"][-1]["content"]


# --- text fallback, unions, other types -----------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_text_or_invoice(router: FakeFluxRouter, wire: str) -> None:
    router.add(text("I need the invoice number first."), tool_calls(call("final_result", INVOICE)))
    async with make_client(router, wire) as client:
        agent = Agent[None, str | Invoice](client=client, output_type=str | Invoice)
        asked = await agent.run("Invoice?")
        answered = await agent.run("INV-1")
    assert asked.output == "I need the invoice number first."
    assert answered.output == EXPECTED
    assert router.requests[0].json["tool_choice"] in ("auto", {"type": "auto"})  # text allowed


@pytest.mark.parametrize(
    ("output_type", "answer", "expected"),
    [
        (Contact, {"name": "Ana", "email": "a@x"}, {"name": "Ana", "email": "a@x"}),
        (list[Line], {"response": [{"item": "a", "amount": 1}]}, [Line("a", 1)]),
        (list[int], {"response": [1, 2, 3]}, [1, 2, 3]),
        (Line | Contact, {"response": {"name": "Ana", "email": "a@x"}}, {"name": "Ana", "email": "a@x"}),
        (Line | Contact, {"response": {"item": "a", "amount": 2}}, Line("a", 2)),
        (
            JsonSchema(
                {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, name="count"
            ),
            {"n": 4},
            {"n": 4},
        ),
        ({"type": "object", "properties": {"n": {"type": "integer"}}}, {"n": 5}, {"n": 5}),
    ],
)
async def test_output_types(output_type: Any, answer: Any, expected: Any) -> None:
    model = ScriptedModel([tool_calls(call("final_result", answer))])
    result = await Agent(client=model, output_type=output_type, output_mode="tool").run("go")
    assert result.output == expected and type(result.output) is type(expected)


async def test_pydantic_model_output_when_pydantic_is_installed() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int = pydantic.Field(ge=0)

    model = ScriptedModel(
        [
            tool_calls(call("final_result", {"name": "Ana", "age": -1})),
            tool_calls(call("final_result", {"name": "Ana", "age": 30})),
        ]
    )
    result = await Agent(client=model, output_type=Person).run("who?")
    assert result.output == Person(name="Ana", age=30)
    assert (
        "$.age" in model.requests[1]["messages"][-1]["content"]
    )  # pydantic's schema bound, fed back by path
    assert RunResult.from_json(result.to_json()).output == {"name": "Ana", "age": 30}


# --- native response format -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["run", "stream"])
async def test_native_response_format_on_the_openai_wire(router: FakeFluxRouter, how: str) -> None:
    router.add(text('{"number": "INV-1", "total": "x", "lines": []}'), text(json.dumps(INVOICE)))
    async with make_client(router, "openai") as client:
        agent = Agent(client=client, output_type=Invoice)  # no tools on the OpenAI wire: "auto" is native
        assert agent.output is not None and agent.output.mode == "native"
        result = await run_or_stream(agent, how, "Invoice?")
    assert result.output == EXPECTED
    body = router.requests[0].json
    assert body["response_format"]["type"] == "json_schema" and "tools" not in body
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["number", "total", "lines"]
    assert "$.total" in last_user_text(router.requests[1].json)
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user", "assistant"]


async def test_auto_picks_the_tool_on_the_anthropic_wire_and_native_is_refused_there(
    router: FakeFluxRouter,
) -> None:
    async with make_client(router, "anthropic") as client:
        assert Agent(client=client, output_type=Invoice).output.mode == "tool"  # type: ignore[union-attr]
        with pytest.raises(ConfigurationError, match="Anthropic wire"):
            Agent(client=client, output_type=Invoice, output_mode="native")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_type": object()}, "cannot be turned into a JSON schema"),
        ({"output_type": Invoice, "output_mode": "magic"}, "output_mode"),
        ({"output_type": Invoice, "output_retries": -1}, "output_retries"),
        ({"output_type": str | Invoice, "output_mode": "native"}, "text fallback"),
        ({"output_type": JsonSchema({"type": 12})}, "not a valid JSON schema"),
    ],
)
def test_bad_output_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Agent(client=ScriptedModel(), **kwargs)


def test_a_tool_named_final_result_clashes() -> None:
    tools = ToolRegistry()

    @tools.tool
    async def final_result() -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="final_result"):
        Agent(client=ScriptedModel(), tools=tools, output_type=Invoice)


# --- journal --------------------------------------------------------------------------------


async def test_a_journaled_structured_run_resumes_to_the_same_instance(tmp_path: Any) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    model = ScriptedModel([text("plain"), tool_calls(call("final_result", INVOICE))])
    agent = Agent(client=model, output_type=Invoice, output_mode="tool", journal=journal)
    result = await agent.run("go", run_id="o1")
    again = await agent.resume("o1")
    journal.close()
    assert again.output == result.output == EXPECTED
    assert again.messages == result.messages  # the feedback message was journaled and replayed


# --- hostile answers ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(answers=st.lists(json_values | st.text(max_size=20), min_size=1, max_size=3))
async def test_any_answer_ends_in_an_output_or_a_typed_error(answers: list[Any]) -> None:
    def script(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        i = sum(1 for m in messages if m["role"] == "assistant")
        a = answers[i] if i < len(answers) else INVOICE
        return [
            call("final_result", a if isinstance(a, str) else json.dumps(a) if not isinstance(a, dict) else a)
        ]

    agent = Agent(client=FunctionModel(script), output_type=Invoice, output_retries=len(answers))
    try:
        result = await agent.run("go")
    except OutputValidationError as e:  # pragma: no cover - retries always suffice here
        pytest.fail(f"retries should have sufficed: {e}")
    assert isinstance(result.output, Invoice)
    roles = [m["role"] for m in result.messages]
    assert roles.count("tool") == roles.count("assistant")  # every final_result call was answered


async def test_resuming_with_a_changed_output_type_is_a_resume_error(tmp_path: Any) -> None:
    from agentloop import ResumeError

    journal = SQLiteJournal(tmp_path / "j.db")
    await Agent(
        client=ScriptedModel([tool_calls(call("final_result", INVOICE))]),
        output_type=Invoice,
        journal=journal,
    ).run("go", run_id="o2")
    with pytest.raises(ResumeError, match="no longer validates"):
        await Agent(client=ScriptedModel(), output_type=list[int], journal=journal).resume("o2")
    journal.close()


async def test_the_journal_viewer_shows_the_feedback_message(tmp_path: Any) -> None:
    from agentloop._journal_cli import render_run  # internal unit under test

    journal = SQLiteJournal(tmp_path / "j.db")
    model = ScriptedModel([text("plain"), tool_calls(call("final_result", INVOICE))])
    await Agent(client=model, output_type=Invoice, output_mode="tool", journal=journal).run("go", run_id="o3")
    shown = render_run(await journal.load("o3"))
    journal.close()
    assert "[user] Plain text is not a final answer" in shown and "=== finished: final" in shown


async def test_test_model_answers_a_structured_agent_from_the_schema() -> None:
    from agentloop.testing import TestModel

    result = await Agent(client=TestModel(), output_type=Line).run("x")
    assert isinstance(result.output, Line) and result.steps == 1


@pytest.mark.parametrize("wire", WIRES)
async def test_a_forced_first_tool_then_required_and_failed_answers_marked_as_errors(
    router: FakeFluxRouter, wire: str
) -> None:
    router.add(
        tool_calls(call("lookup", {"number": "INV-1"})),
        tool_calls(call("final_result", {"number": "INV-1"})),  # invalid
        tool_calls(call("final_result", INVOICE)),
    )
    async with make_client(router, wire) as client:
        agent = Agent(
            client=client, tools=lookup_tools(), output_type=Invoice, output_mode="tool", tool_choice="lookup"
        )
        result = await agent.run("Invoice INV-1?")
    assert result.output == EXPECTED
    choices = [r.json["tool_choice"] for r in router.requests]
    if wire == "openai":
        assert choices == [{"type": "function", "function": {"name": "lookup"}}, "required", "required"]
    else:
        assert choices == [{"type": "tool", "name": "lookup"}, {"type": "any"}, {"type": "any"}]
        results = router.requests[2].json["messages"][-1]["content"]
        assert [b.get("is_error", False) for b in results if b["type"] == "tool_result"] == [True]


@pytest.mark.parametrize("how", ["run", "stream"])
async def test_a_route_that_refuses_the_response_format_falls_back_to_the_tool(
    router: FakeFluxRouter, how: str
) -> None:
    from agentloop.testing import error

    def handler(req: Any) -> Any:
        if "response_format" in req.json:
            return error(400, "response_format json_schema is not supported by the routed model")
        return tool_calls(call("final_result", INVOICE))

    router._handler = handler
    async with make_client(router, "openai") as client:
        agent = Agent(client=client, output_type=Invoice)  # auto: native first
        result = await run_or_stream(agent, how, "Invoice?")
        assert agent.output is not None and agent.output.mode == "native"  # the agent itself is unchanged
    assert result.output == EXPECTED and result.steps == 1
    retried = router.requests[1].json
    assert "response_format" not in retried and tool_names(retried) == ["final_result"]
    assert retried["tool_choice"] == "required"


async def test_an_explicit_native_mode_or_another_400_is_not_papered_over(router: FakeFluxRouter) -> None:
    from agentloop import BadRequestError
    from agentloop.testing import error

    router.add(
        error(400, "response_format json_schema is not supported"), error(400, "context length exceeded")
    )
    async with make_client(router, "openai") as client:
        with pytest.raises(BadRequestError, match="response_format"):
            await Agent(client=client, output_type=Invoice, output_mode="native").run("x")
        with pytest.raises(BadRequestError, match="context length"):
            await Agent(client=client, output_type=Invoice).run("x")


# --- partial output while streaming ---------------------------------------------------------


async def stream_partials(agent: Agent[Any, Any], prompt: str) -> tuple[list[Any], Any]:
    from agentloop import OutputDelta, RunFinished

    partials, final = [], None
    async with agent.stream(prompt) as events:
        async for event in events:
            if isinstance(event, OutputDelta):
                partials.append(event.output)
            elif isinstance(event, RunFinished):
                final = event.result.output
    return partials, final


def grows_into(partial: Any, full: Any) -> bool:
    """`partial` is a piece of `full`: every key it has, with a value that grows into full's."""
    if isinstance(partial, dict):
        return isinstance(full, dict) and all(
            k in full and grows_into(v, full[k]) for k, v in partial.items()
        )
    if isinstance(partial, list):
        return (
            isinstance(full, list)
            and len(partial) <= len(full)
            and all(grows_into(a, b) for a, b in zip(partial, full, strict=False))
        )
    if isinstance(partial, str):
        return isinstance(full, str) and full.startswith(partial)
    return partial == full


@pytest.mark.parametrize("wire", WIRES)
async def test_streaming_yields_growing_partial_outputs_through_the_tool(
    router: FakeFluxRouter, wire: str
) -> None:
    router.add(tool_calls(call("final_result", INVOICE)))
    async with make_client(router, wire) as client:
        partials, final = await stream_partials(
            Agent(client=client, output_type=Invoice, output_mode="tool"), "x"
        )
    assert final == EXPECTED
    assert len(partials) >= 2 and partials[-1] == INVOICE
    assert all(grows_into(p, INVOICE) for p in partials)
    assert all(grows_into(a, b) for a, b in itertools.pairwise(partials))


async def test_streaming_yields_partial_outputs_of_a_native_answer(router: FakeFluxRouter) -> None:
    router.add(
        text(json.dumps({"response": [{"item": "tea", "amount": 1.5}, {"item": "scone", "amount": 2.0}]}))
    )
    async with make_client(router, "openai") as client:
        partials, final = await stream_partials(Agent(client=client, output_type=list[Line]), "x")
    assert final == [Line("tea", 1.5), Line("scone", 2.0)]
    assert len(partials) >= 2 and partials[-1] == [
        {"item": "tea", "amount": 1.5},
        {"item": "scone", "amount": 2.0},
    ]
    assert all(isinstance(p, list) for p in partials)  # unwrapped, like the output


@settings(max_examples=examples(50), deadline=None)
@given(json_values, st.data())
def test_completing_any_cut_of_a_json_text_gives_a_piece_of_it(value: Any, data: st.DataObject) -> None:
    from agentloop._run.output_stream import _NOTHING, complete_json  # internal unit under test

    textual = json.dumps(value)
    cut = data.draw(st.integers(0, len(textual)))
    partial = complete_json(textual[:cut])
    if cut == len(textual):
        assert partial == value
    elif partial is not _NOTHING and isinstance(value, (dict, list)):
        assert grows_into(partial, value)


async def test_the_journal_keeps_a_structured_output_as_text_for_readers_and_data_for_resume(
    tmp_path: Any,
) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    model = ScriptedModel([tool_calls(call("final_result", INVOICE))])
    result = await Agent(client=model, output_type=Invoice, journal=journal).run("go", run_id="o4")
    end = next(e for e in (await journal.load("o4")).entries if e.kind == "end")
    assert isinstance(end.data["output"], str) and json.loads(end.data["output"]) == end.data["output_data"]
    page = await journal.query_runs(search="INV-1")  # the run list and its search read the text
    assert [r.run_id for r in page.runs] == ["o4"] and page.runs[0].output == end.data["output"]
    plain = await Agent(client=ScriptedModel(), journal=journal).resume("o4")  # an agent without output_type
    journal.close()
    assert result.output == EXPECTED and plain.output == json.loads(end.data["output"])
