"""The rules of one step's tool calls (agentloop/_run/calls.py) and of the run's state
(agentloop/_run/state.py), each on its own, through the public API.

The order of the rules for each call of a step: the per-message cap, then the loop guard, then the
run's `max_tool_calls` budget, then an unfinished call from before a crash, then approval. A call a rule
settles is never run; only the calls that pass the loop guard spend the budget. The conversation stays
valid whichever rule fires: every assistant tool call is answered by exactly one tool message, in the
model's order, before the next request.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import assert_valid_conversation, examples, step_tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    InputBudget,
    LoopDetected,
    Reject,
    RunLimits,
    RunResult,
    ToolCallFinished,
    ToolCallLimitExceeded,
    ToolCallStarted,
)
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def statuses(result: RunResult) -> list[tuple[str, str]]:
    return [(r.id, r.status) for r in result.tool_calls]


# --- the tool-call budget ------------------------------------------------------------------------


def expected_under_budget(steps: list[list[str]], budget: int) -> tuple[list[str], list[str], int | None]:
    """The reference rule: calls spend the budget in the model's order; once it is spent, every later
    call of that step is 'skipped' and the run stops after the step. Returns (ran, statuses, stop step)."""
    ran: list[str] = []
    status: list[str] = []
    for n, keys in enumerate(steps, start=1):
        for key in keys:
            if len(ran) < budget:
                ran.append(key)
                status.append("ok")
            else:
                status.append("skipped")
        if "skipped" in status:
            return ran, status, n
    return ran, status, None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.lists(st.integers(0, 5).map(str), min_size=1, max_size=4, unique=True), max_size=5),
    budget=st.integers(1, 8),
)
def test_any_sequence_of_calls_stays_within_the_budget(
    backend: str, steps: list[list[str]], budget: int
) -> None:
    tools, ran = step_tools()
    script = [tool_calls(*[call("lookup", {"key": k}) for k in keys]) for keys in steps] + [text("done")]
    model = ScriptedModel(script)
    limits = RunLimits(max_tool_calls=budget, max_steps=len(steps) + 1, loop_threshold=None)
    agent = Agent(client=model, tools=tools, limits=limits)
    want_ran, want_status, stop_step = expected_under_budget(steps, budget)

    async def go() -> RunResult:
        if stop_step is None:
            return await agent.run("go")
        with pytest.raises(ToolCallLimitExceeded, match=f"max_tool_calls={budget}") as info:
            await agent.run("go")
        return info.value.result

    result = anyio.run(go, backend=backend)
    assert sorted(ran) == sorted(want_ran) and len(ran) <= budget
    assert [r.status for r in result.tool_calls] == want_status
    assert_valid_conversation(result.messages)
    if stop_step is None:
        assert result.output == "done" and result.stop_reason == "final"
        assert len(model.requests) == len(steps) + 1
    else:
        assert result.stop_reason == "max_tool_calls" and result.steps == stop_step
        assert len(model.requests) == stop_step  # no request after the step that overspent
        assert result.messages[-1]["role"] == "tool"


async def test_the_budget_message_says_which_limit_was_spent() -> None:
    tools, ran = step_tools()
    model = ScriptedModel(
        [tool_calls(call("lookup", {"key": "a"}, id="a"), call("lookup", {"key": "b"}, id="b"))]
    )
    with pytest.raises(ToolCallLimitExceeded) as info:
        await Agent(client=model, tools=tools, limits=RunLimits(max_tool_calls=1)).run("go")
    skipped = info.value.result.tool_calls[1]
    assert ran == ["a"] and (skipped.id, skipped.status) == ("b", "skipped")
    assert skipped.content == "Not run: the run's budget of max_tool_calls=1 tool calls is spent."
    assert info.value.result.messages[-1] == {"role": "tool", "tool_call_id": "b", "content": skipped.content}


async def test_a_call_stopped_by_the_loop_guard_does_not_spend_the_budget() -> None:
    tools, ran = step_tools()
    model = ScriptedModel(
        [
            *[tool_calls(call("lookup", {"key": "a"}, id=f"a{i}")) for i in range(3)],  # third: loop_detected
            tool_calls(call("lookup", {"key": "b"}, id="b")),  # the budget's third call
            tool_calls(call("lookup", {"key": "c"}, id="c")),  # over it
        ]
    )
    with pytest.raises(ToolCallLimitExceeded) as info:
        await Agent(client=model, tools=tools, limits=RunLimits(max_tool_calls=3)).run("go")
    assert ran == ["a", "a", "b"]
    assert statuses(info.value.result) == [
        ("a0", "ok"),
        ("a1", "ok"),
        ("a2", "loop_detected"),
        ("b", "ok"),
        ("c", "skipped"),
    ]


async def test_calls_over_the_per_message_cap_are_neither_run_nor_counted() -> None:
    tools, ran = step_tools()
    burst = tool_calls(*[call("lookup", {"key": k}, id=k) for k in "abc"])
    agent = Agent(
        client=ScriptedModel([burst, tool_calls(call("lookup", {"key": "d"}, id="d")), text("done")]),
        tools=tools,
        input_budget=InputBudget(max_tool_calls=2),
        limits=RunLimits(max_tool_calls=3),
    )
    result = await agent.run("go")
    assert sorted(ran) == ["a", "b", "d"] and result.output == "done"  # "c" did not spend the budget of 3
    assert statuses(result) == [("a", "ok"), ("b", "ok"), ("c", "too_many_calls"), ("d", "ok")]
    assert_valid_conversation(result.messages)


# --- the loop guard ------------------------------------------------------------------------------


async def test_loop_guard_stops_the_run_after_the_step_with_every_call_answered() -> None:
    tools, ran = step_tools()
    same = [tool_calls(call("lookup", {"key": "x"}, id=f"x{i}")) for i in range(5)]
    with pytest.raises(LoopDetected, match="same arguments") as info:
        await Agent(client=ScriptedModel(same), tools=tools, limits=RunLimits(loop_threshold=2)).run("go")
    partial = info.value.result
    assert ran == ["x"] and partial.stop_reason == "loop_detected"
    assert statuses(partial) == [("x0", "ok"), ("x1", "loop_detected"), ("x2", "loop_detected")]
    assert_valid_conversation(partial.messages)


# --- approval admission and resume decisions -----------------------------------------------------


async def test_approval_pauses_after_running_what_needs_none_and_events_cover_every_call() -> None:
    tools, ran = step_tools()
    step = tool_calls(call("send", {"to": "bob"}, id="s"), call("lookup", {"key": "k"}, id="k"))
    agent = Agent(client=ScriptedModel([step, text("done")]), tools=tools)
    paused = await agent.run("go")
    assert paused.stop_reason == "approval_required" and [p.id for p in paused.pending] == ["s"]
    assert ran == ["k"] and statuses(paused) == [("k", "ok")]
    assert paused.messages[-1]["role"] == "assistant"  # nothing answered until every call is settled

    events: list[Any] = []
    agent = Agent(client=ScriptedModel([text("done")]), tools=tools, observers=[events.append])
    result = await agent.resume(paused, approvals={"s": Reject("not now")})
    assert result.output == "done" and ran == ["k"]  # the rejected call never ran; "k" not run again
    # close_step puts the step's records in the model's order, whatever order they settled in
    assert statuses(result) == [("s", "rejected"), ("k", "ok")]
    seen = [
        (type(e).__name__, e.tool_call_id if isinstance(e, ToolCallStarted) else e.record.id)
        for e in events
        if isinstance(e, (ToolCallStarted, ToolCallFinished))
    ]
    assert seen == [
        ("ToolCallStarted", "s"),
        ("ToolCallFinished", "s"),
    ]  # a rejected call still gets both events
    tool_msgs = [m for m in result.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["s", "k"]  # the model's order, not the finishing order
    assert "Reason: not now" in tool_msgs[0]["content"]


async def test_a_call_waiting_for_approval_has_spent_the_budget() -> None:
    tools, ran = step_tools()
    step = tool_calls(call("send", {"to": "bob"}, id="s"), call("lookup", {"key": "k"}, id="k"))
    agent = Agent(
        client=ScriptedModel([step, text("never asked")]), tools=tools, limits=RunLimits(max_tool_calls=1)
    )
    paused = await agent.run("go")
    assert [p.id for p in paused.pending] == ["s"] and statuses(paused) == [("k", "skipped")] and ran == []
    with pytest.raises(ToolCallLimitExceeded) as info:
        await agent.resume(paused, approvals={"s": True})
    assert ran == ["send bob"] and statuses(info.value.result) == [("s", "ok"), ("k", "skipped")]
    assert_valid_conversation(info.value.result.messages)


async def test_resume_recounts_the_budget_from_the_records_without_the_loop_stopped_ones() -> None:
    tools, ran = step_tools()
    first = tool_calls(call("lookup", {"key": "x"}, id="x0"))
    step = tool_calls(
        call("lookup", {"key": "x"}, id="x1"),  # loop_detected (a warning at threshold 2): not counted
        call("send", {"to": "bob"}, id="s"),  # the budget's second call, waiting for approval
    )
    limits = RunLimits(max_tool_calls=2, loop_threshold=2)
    agent = Agent(client=ScriptedModel([first, step, text("done")]), tools=tools, limits=limits)
    paused = await agent.run("go")
    assert statuses(paused) == [("x0", "ok"), ("x1", "loop_detected")] and [p.id for p in paused.pending] == [
        "s"
    ]
    result = await agent.resume(paused, approvals={"s": True})
    assert result.output == "done" and ran == ["x", "send bob"]
    assert statuses(result) == [("x0", "ok"), ("x1", "loop_detected"), ("s", "ok")]
    assert_valid_conversation(result.messages)
