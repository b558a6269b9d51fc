"""Admission of one step's calls (agentloop/_run/calls.py) on its own: a `StepCalls` over a `CallPolicy`,
a real `Dispatcher` and tools, and a `Run`, without a model or an agent.

The rules, in order for each call: the per-message cap, the loop guard, the run's `max_tool_calls`
budget, an unfinished call from before a crash, approval. What the step comes to is returned
(`CallsDone`: pending calls or the limit that stops the run), never raised. Whole runs under the same
rules are in tests/test_step_rules.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import examples, step_tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    InputBudget,
    LoopDetected,
    Override,
    Reject,
    RunLimits,
    ToolCallFinished,
    ToolCallLimitExceeded,
    ToolCallStarted,
    ToolRegistry,
    default_error_formatter,
)
from agentloop._run.calls import CallPolicy, StepCalls  # internal unit under test
from agentloop._run.loopguard import LoopGuard, Streak, call_key  # internal unit under test
from agentloop._run.recorder import Recorder  # internal unit under test
from agentloop._run.state import NOT_COUNTED, Resume, Run, make_record  # internal unit under test
from agentloop._tools.dispatch import Dispatcher  # internal unit under test

pytestmark = pytest.mark.anyio


def call(name: str, key: str, cid: str) -> dict[str, Any]:
    arg = "to" if name == "send" else "key"
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": f'{{"{arg}": "{key}"}}'}}


def step_calls(
    tools: ToolRegistry,
    limits: RunLimits,
    *,
    budget: InputBudget | None = None,
    events: list[Any] | None = None,
    require_approval: Any = None,
) -> tuple[StepCalls, Run]:
    budget = budget or InputBudget()
    run = Run("run-1", [{"role": "user", "content": "go"}])
    run.count_from_history(limits.loop_threshold)

    async def emit(event: Any) -> None:
        assert events is not None
        events.append(event)

    listener = emit if events is not None else None
    recorder = Recorder(run.run_id, None, listener, None)
    run.record_to(recorder)
    dispatcher = Dispatcher(
        tools,
        run_id=run.run_id,
        emit=listener,
        log=None,
        max_concurrent=None,
        format_error=default_error_formatter,
        on_finish=run.settle,
        budget=budget,
    )
    return StepCalls(CallPolicy(tools, require_approval, limits, budget), dispatcher, recorder), run


def statuses(run: Run) -> list[tuple[str, str]]:
    return [(r.id, r.status) for r in run.tool_calls]


def answered_in_order(run: Run, calls: list[dict[str, Any]]) -> None:
    """Every call answered once, in the model's order, by a record and a tool message."""
    assert [r.id for r in run.tool_calls] == [c["id"] for c in calls]
    tool_messages = [m for m in run.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c["id"] for c in calls]
    assert run.step_calls is None and run.step_records == {}


async def test_the_loop_guard_warns_then_stops_and_the_step_says_so() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits(loop_threshold=2))
    calls = [call("lookup", "a", f"c{i}") for i in range(3)]
    for step, c in enumerate(calls, 1):  # one per step: identical calls in one message are a burst
        done = await steps.run(run, [c], step)
        assert (done.stop is None) == (step < 3)
    assert ran == ["a"]
    assert statuses(run) == [("c0", "ok"), ("c1", "loop_detected"), ("c2", "loop_detected")]
    assert "Repeating this call again stops the run" in run.tool_calls[1].content
    assert done.pending == [] and done.stop is not None
    cls, message = done.stop
    assert cls is LoopDetected and "3 times in a row" in message
    answered_in_order(run, calls)
    assert run.tool_count == 1  # the loop guard's calls do not spend the budget


async def test_a_warning_alone_does_not_stop_the_run() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits(loop_threshold=2))
    await steps.run(run, [call("lookup", "a", "c0")], 1)
    done = await steps.run(run, [call("lookup", "a", "c1")], 2)
    assert done.stop is None and done.pending == [] and ran == ["a"]
    assert statuses(run) == [("c0", "ok"), ("c1", "loop_detected")]


async def test_identical_calls_in_one_message_are_a_burst_not_a_loop() -> None:
    # Counted one by one, the second of two parallel identical calls was refused ("the result will
    # not change") and a third stopped the run, though the model had seen no result yet.
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits(loop_threshold=2))
    done = await steps.run(run, [call("lookup", "a", f"c{i}") for i in range(5)], 1)
    assert done.stop is None and ran == ["a"] * 5
    done = await steps.run(run, [call("lookup", "a", f"d{i}") for i in range(3)], 2)  # the next step: a loop
    assert done.stop is None and statuses(run)[5:] == [(f"d{i}", "loop_detected") for i in range(3)]
    done = await steps.run(run, [call("lookup", "a", "e0"), call("lookup", "a", "e1")], 3)
    assert done.stop is not None and done.stop[0] is LoopDetected


async def test_calls_over_the_budget_are_skipped_and_the_step_reports_the_limit() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits(max_tool_calls=2))
    calls = [call("lookup", k, k) for k in "abc"]
    done = await steps.run(run, calls, 1)
    assert sorted(ran) == ["a", "b"]
    assert statuses(run) == [("a", "ok"), ("b", "ok"), ("c", "skipped")]
    assert run.tool_calls[2].content == "Not run: the run's budget of max_tool_calls=2 tool calls is spent."
    assert done.stop is not None and done.stop[0] is ToolCallLimitExceeded
    assert "max_tool_calls=2" in done.stop[1]
    assert run.tool_count == 2
    answered_in_order(run, calls)


async def test_the_per_message_cap_settles_the_rest_uncounted_and_unwatched() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(
        tools, RunLimits(max_tool_calls=5, loop_threshold=2), budget=InputBudget(max_tool_calls=2)
    )
    calls = [
        call("lookup", "a", "c0"),
        call("lookup", "b", "c1"),
        call("lookup", "a", "c2"),
        call("lookup", "a", "c3"),
    ]
    done = await steps.run(run, calls, 1)
    assert sorted(ran) == ["a", "b"]
    assert statuses(run) == [("c0", "ok"), ("c1", "ok"), ("c2", "too_many_calls"), ("c3", "too_many_calls")]
    assert done.stop is None  # over the cap is not over the budget, and the guard never saw c2, c3
    assert run.tool_count == 2 and run.guard.streak == 1


async def test_a_call_that_needs_approval_leaves_the_step_open_with_it_pending() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits())
    calls = [call("lookup", "a", "a"), call("send", "bob", "s")]
    done = await steps.run(run, calls, 1)
    assert ran == ["a"] and done.stop is None
    assert [(p.id, p.name, p.arguments) for p in done.pending] == [("s", "send", {"to": "bob"})]
    assert run.step_calls is calls and run.tool_calls == []  # the step is not closed: it resumes
    paused = run.paused(done.pending)
    assert paused.stop_reason == "approval_required" and paused.pending == done.pending
    assert [(r.id, r.status) for r in paused.tool_calls] == [("a", "ok")]


async def test_require_approval_of_the_policy_is_asked_with_the_parsed_arguments() -> None:
    tools, ran = step_tools()
    asked: list[tuple[str, Any]] = []

    def needs(tool_name: str, arguments: Any) -> bool:
        asked.append((tool_name, arguments))
        return arguments == {"key": "secret"}

    steps, run = step_calls(tools, RunLimits(), require_approval=needs)
    done = await steps.run(run, [call("lookup", "open", "o"), call("lookup", "secret", "x")], 1)
    assert asked == [("lookup", {"key": "open"}), ("lookup", {"key": "secret"})]
    assert ran == ["open"] and [p.id for p in done.pending] == ["x"]


async def test_a_resumed_step_takes_its_records_decisions_and_interrupted_calls() -> None:
    tools, ran = step_tools()
    steps, run = step_calls(tools, RunLimits())
    calls = [
        call("lookup", "done", "d"),  # finished before the crash: kept, counted, not run again
        call("lookup", "cut", "u"),  # started, not idempotent: outcome unknown
        call("read", "cut", "r"),  # started, idempotent: run again
        call("send", "bob", "no"),  # rejected
        call("send", "eve", "ov"),  # overridden
        call("send", "ann", "yes"),  # approved
    ]
    finished = make_record("d", "lookup", calls[0]["function"]["arguments"], 1, "ok", "value of done")
    decisions = {"no": Reject("not today"), "ov": Override("stand-in"), "yes": True}
    resume = Resume(calls, {"d": finished}, frozenset({"u", "r"}), decisions)
    done = await steps.run(run, calls, 1, resume)
    assert done.pending == [] and done.stop is None
    assert sorted(ran) == ["read cut", "send ann"]
    assert statuses(run) == [
        ("d", "ok"),
        ("u", "outcome_unknown"),
        ("r", "ok"),
        ("no", "rejected"),
        ("ov", "overridden"),
        ("yes", "ok"),
    ]
    assert "not marked idempotent" in run.tool_calls[1].content
    assert "not today" in run.tool_calls[3].content and run.tool_calls[4].content == "stand-in"
    assert run.tool_count == 6  # every call that passed the guard spent the budget, the kept one too
    answered_in_order(run, calls)


async def test_every_call_gets_both_events_and_a_settled_one_gets_them_at_admission() -> None:
    tools, ran = step_tools()
    events: list[Any] = []
    steps, run = step_calls(tools, RunLimits(max_tool_calls=1), events=events)
    await steps.run(run, [call("lookup", "a", "a"), call("lookup", "b", "b")], 1)
    assert ran == ["a"]
    seen = [
        (type(e).__name__, e.tool_call_id if isinstance(e, ToolCallStarted) else e.record.id) for e in events
    ]
    assert seen == [  # b is skipped while the step is admitted; a runs after admission
        ("ToolCallStarted", "b"),
        ("ToolCallFinished", "b"),
        ("ToolCallStarted", "a"),
        ("ToolCallFinished", "a"),
    ]
    assert isinstance(events[1], ToolCallFinished) and events[1].record.status == "skipped"
    assert isinstance(events[3], ToolCallFinished) and events[3].record.status == "ok"


# --- any step, any limits: the invariants -------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.sampled_from("aab"), min_size=1, max_size=12),
    max_calls=st.none() | st.integers(1, 6),
    threshold=st.none() | st.integers(2, 4),
    cap=st.integers(1, 8),
)
def test_any_step_answers_every_call_once_and_reports_the_limit_it_hit(
    backend: str, keys: list[str], max_calls: int | None, threshold: int | None, cap: int
) -> None:
    tools, ran = step_tools()
    limits = RunLimits(max_tool_calls=max_calls, loop_threshold=threshold)
    steps, run = step_calls(tools, limits, budget=InputBudget(max_tool_calls=cap))
    calls = [call("lookup", k, f"c{i}") for i, k in enumerate(keys)]
    done = anyio.run(steps.run, run, calls, 1, backend=backend)
    answered_in_order(run, calls)
    got = [r.status for r in run.tool_calls]
    assert all(s == "too_many_calls" for s in got[cap:])
    assert "too_many_calls" not in got[:cap]
    assert run.tool_count == sum(s not in NOT_COUNTED for s in got) == len(ran)
    assert max_calls is None or len(ran) <= max_calls
    if threshold is None:
        assert "loop_detected" not in got
    stop = done.stop[0] if done.stop is not None else None
    if "skipped" in got:
        assert stop in (ToolCallLimitExceeded, LoopDetected)
    if stop is ToolCallLimitExceeded:
        assert "skipped" in got
    assert done.pending == []


# --- the loop guard: only the identity of calls counts, however it is written --------------------


def reference_streaks(calls: list[tuple[str, Any]], threshold: int) -> list[Streak]:
    """The rule as documented: a streak of equal `call_key`s; WARN at the threshold, STOP after it."""
    out, last, streak = [], None, 0
    for name, raw in calls:
        key = call_key(name, raw)
        streak = streak + 1 if key == last else 1
        last = key
        out.append(Streak.FINE if streak < threshold else Streak.WARN if streak == threshold else Streak.STOP)
    return out


ARGUMENTS = st.sampled_from(
    [
        '{"a": 1, "b": 2}',
        '{"b": 2, "a": 1}',
        '{"a":1,"b":2}',
        '{"a": 1}',
        "{}",
        "not json",
        "",
        "[1]",
        '{"a": 1.0}',
    ]
)


@given(
    calls=st.lists(st.tuples(st.sampled_from(["f", "g"]), ARGUMENTS), max_size=30),
    threshold=st.integers(2, 4),
    history=st.integers(0, 5),
)
def test_the_loop_guard_follows_the_identity_of_calls_not_their_text(
    calls: list[tuple[str, Any]], threshold: int, history: int
) -> None:
    guard = LoopGuard(threshold, calls[:history])  # a restored run's history counts the same way
    got = [guard.observe(name, raw) for name, raw in calls[history:]]
    assert got == reference_streaks(calls, threshold)[history:]
