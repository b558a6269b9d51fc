"""Double-encoded tool-call arguments (outside-in review, round 5): some models send `arguments`
as a JSON string whose value is the object's JSON text, `"{\\"city\\": \\"Paris\\"}"`. It was
refused ("The arguments must be a JSON object, got str") and fed back to the model, a wasted
step. Exactly one level is unwrapped, and only when the decoded string is itself a JSON object:
on both wires, streamed or not, through approval and a journaled resume. The call's record keeps
what the model sent (`raw_arguments`); the conversation carries the object's text, so the next
request (and a provider translating the history) sees valid object arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wirehelp import WIRES, make_client, run_or_stream

from agentloop import Agent, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
from helpers import examples

pytestmark = pytest.mark.anyio

PARIS = {"city": "Paris", "days": 2}
TWICE = json.dumps(json.dumps(PARIS))  # '"{\\"city\\": \\"Paris\\", \\"days\\": 2}"'


def weather_tools(seen: list[dict[str, Any]]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def weather(city: str, days: int = 1) -> str:
        """The forecast."""
        seen.append({"city": city, "days": days})
        return f"{city}: sunny for {days} days"

    return tools


def sent_arguments(body: dict[str, Any]) -> Any:
    """The arguments of the first tool call the request sends back, as data, whatever the wire."""
    for m in body["messages"]:
        for c in m.get("tool_calls") or ():
            return json.loads(c["function"]["arguments"])
        if isinstance(m.get("content"), list):
            for b in m["content"]:
                if b.get("type") == "tool_use":
                    return b["input"]
    raise AssertionError("no tool call in the request")


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_double_encoded_arguments_run_the_tool(router: FakeFluxRouter, wire: str, how: str) -> None:
    router.add(tool_calls(call("weather", TWICE, id="c1")), text("done"))
    seen: list[dict[str, Any]] = []
    async with make_client(router, wire) as client:
        agent = Agent(client=client, tools=weather_tools(seen))
        result = await run_or_stream(agent, how, "weather?")
    [record] = result.tool_calls
    assert record.status == "ok" and record.content == "Paris: sunny for 2 days", record.content
    assert record.arguments == PARIS and seen == [PARIS]
    assert json.loads(record.raw_arguments) in (PARIS, json.dumps(PARIS))  # what the model sent
    assert sent_arguments(router.requests[1].json) == PARIS  # the history carries the object
    assert json.loads(result.messages[1]["tool_calls"][0]["function"]["arguments"]) == PARIS


def one_call(arguments: str, tools: ToolRegistry) -> Any:
    model = ScriptedModel([tool_calls(call("weather", arguments, id="c1")), text("done")])
    return Agent(client=model, tools=tools).run_sync("weather?").tool_calls[0]


_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6)
_objects = st.dictionaries(
    st.sampled_from(["city", "days", "x"]) | st.text(max_size=4),
    _scalars | st.lists(_scalars, max_size=2),
    max_size=4,
)


@settings(max_examples=examples(25), deadline=None)
@given(o=_objects)
def test_any_object_encoded_twice_validates_as_encoded_once(o: dict[str, Any]) -> None:
    tools = weather_tools([])
    once, twice = one_call(json.dumps(o), tools), one_call(json.dumps(json.dumps(o)), tools)
    assert (twice.status, twice.content, twice.arguments) == (once.status, once.content, once.arguments)
    assert twice.raw_arguments == json.dumps(json.dumps(o))


def _is_object_text(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


_not_object_text = (
    st.lists(_scalars, max_size=3).map(json.dumps)  # an array's text
    | _scalars.map(json.dumps)  # a scalar's
    | st.text(max_size=8).filter(lambda s: not _is_object_text(s))  # any text
    | st.just("{not json")
    | _objects.map(lambda o: json.dumps(json.dumps(o)))  # an object encoded twice: three in all
)


@settings(max_examples=examples(25), deadline=None)
@given(s=_not_object_text)
def test_a_string_that_is_not_an_object_after_one_decode_is_refused_as_before(s: str) -> None:
    """Only one level, and only into an object: anything else is the "got str" refusal of old."""
    record = one_call(json.dumps(s), weather_tools([]))
    assert record.status == "invalid_arguments" and record.arguments is None
    assert "The arguments must be a JSON object, got str" in record.content


async def test_a_journaled_resume_replays_the_unwrapped_call(tmp_path: Path) -> None:
    """Paused for approval, resumed from the journal in a new agent: the tool gets the object,
    and the resumed run's records equal a run that was never paused."""
    seen: list[dict[str, Any]] = []
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def weather(city: str, days: int = 1) -> str:
        seen.append({"city": city, "days": days})
        return f"{city}: sunny for {days} days"

    def make(journal: SQLiteJournal, *script: Any) -> Agent[Any, Any]:
        return Agent(client=ScriptedModel(script), tools=tools, journal=journal)

    journal = SQLiteJournal(tmp_path / "runs.db")
    paused = await make(journal, tool_calls(call("weather", TWICE, id="c1"))).run("weather?", run_id="r1")
    assert paused.stop_reason == "approval_required" and paused.pending[0].arguments == PARIS
    journal.close()
    journal = SQLiteJournal(tmp_path / "runs.db")  # another process, as after a restart
    done = await make(journal, text("done")).resume("r1", approvals={"c1": True})
    [record] = done.tool_calls
    assert (record.status, record.arguments, record.raw_arguments) == ("ok", PARIS, TWICE) and seen == [PARIS]
    again = await make(journal).resume("r1")  # finished: returned from the journal as it is
    assert again.tool_calls == done.tool_calls and again.messages == done.messages
    journal.close()
