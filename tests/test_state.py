"""The state of one run (agentloop/_run/state.py) and the limits it is checked against
(agentloop/_run/limits.py), on their own.

A `Run` is complete once constructed and changes only through its named methods; a replayed run is
the same state as the live run that wrote the journal. Whole runs are in tests/test_step_rules.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentloop import (
    Agent,
    PendingCall,
    RunLimits,
    SQLiteJournal,
    StepLimitExceeded,
    TokenLimitExceeded,
    ToolCallLimitExceeded,
    ToolRegistry,
    Usage,
)
from agentloop._run.loopguard import Streak  # internal unit under test
from agentloop._run.state import Run, make_record  # internal unit under test
from agentloop.abc import replay
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def tool_call(cid: str, name: str = "lookup", args: str = '{"key": "a"}') -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def test_a_new_run_is_complete() -> None:
    run = Run("r", [{"role": "user", "content": "hi"}], new_start=0)
    assert (run.steps, run.usage, run.tool_calls, run.tool_count) == (0, Usage(), [], 0)
    assert run.guard.observe("x", "{}") is Streak.FINE  # a guard that never fires until the loop sets one
    assert run.step_calls is None and run.resume is None and run.final is None
    result = run.result("done", "final")
    assert result.messages == [{"role": "user", "content": "hi"}] and result.stop_reason == "final"


async def test_closing_a_step_answers_every_call_in_the_models_order_whatever_settled_first() -> None:
    run = Run("r", [{"role": "user", "content": "go"}])
    calls = [tool_call("a"), tool_call("b"), tool_call("c")]
    run.answered(
        1, "m", Usage(requests=1, total_tokens=5), {"role": "assistant", "content": None, "tool_calls": calls}
    )
    run.open_step(calls, None)
    await run.settle(make_record("c", "lookup", "{}", 1, "ok", "C"))
    await run.settle(make_record("a", "lookup", "{}", 1, "ok", "A"))
    run.close_step()  # b never finished (the run was cancelled while it ran)
    assert [(r.id, r.status) for r in run.tool_calls] == [("a", "ok"), ("b", "cancelled"), ("c", "ok")]
    assert [m.get("tool_call_id") for m in run.messages[2:]] == ["a", "b", "c"]
    assert run.messages[3]["content"] == "Tool 'lookup' was cancelled before it finished."
    assert run.step_calls is None and run.step_records == {}
    run.close_step()  # closing twice adds nothing
    assert len(run.messages) == 5


async def test_a_paused_result_holds_the_settled_calls_of_the_open_step_and_the_pending_ones() -> None:
    run = Run("r", [{"role": "user", "content": "go"}])
    calls = [tool_call("a"), tool_call("s", "send")]
    run.answered(1, "m", Usage(), {"role": "assistant", "content": None, "tool_calls": calls})
    run.open_step(calls, None)
    await run.settle(make_record("a", "lookup", "{}", 1, "ok", "A"))
    pending = [PendingCall("s", "send", {}, 1)]
    result = run.paused(pending)
    assert result.stop_reason == "approval_required" and result.pending == pending
    assert [r.id for r in result.tool_calls] == [
        "a"
    ] and run.tool_calls == []  # the run's own list is untouched


def test_a_limit_error_carries_the_partial_result() -> None:
    run = Run("r", [{"role": "user", "content": "go"}])
    run.answered(1, "m", Usage(requests=1, total_tokens=7), {"role": "assistant", "content": "hm"})
    hit = RunLimits(max_steps=1).before_request(run.steps, run.usage.total_tokens)
    assert hit is not None
    error = run.limit_error(hit)
    assert isinstance(error, StepLimitExceeded) and "max_steps=1" in str(error)
    assert error.result.stop_reason == "max_steps" and error.result.steps == 1
    assert error.result.messages[-1] == {"role": "assistant", "content": "hm"}


def test_usage_is_split_by_model_only_when_a_result_is_made() -> None:
    run = Run("r", [])
    run.answered(1, "a", Usage(requests=1, total_tokens=3), {"role": "assistant", "content": "x"})
    run.answered(2, "b", Usage(requests=1, total_tokens=4), {"role": "assistant", "content": "y"})
    assert run.usage.total_tokens == 7 and run.usage.by_model == {}
    split = run.total_usage().by_model
    assert {m: u.total_tokens for m, u in split.items()} == {"a": 3, "b": 4}


def test_the_loop_guard_and_call_count_start_from_the_runs_history() -> None:
    run = Run("r", [])
    run.tool_calls = [make_record(f"c{i}", "lookup", '{"key": "a"}', 1, "ok", "") for i in range(2)]
    run.tool_calls.append(make_record("s", "lookup", "{}", 1, "skipped", ""))  # not counted
    run.count_from_history(3)
    assert run.tool_count == 2
    assert (
        run.guard.observe("lookup", '{"key":"a"}') is Streak.FINE
    )  # not the history's last call: a new streak
    run.count_from_history(2)
    assert run.guard.observe("lookup", "{}") is Streak.WARN  # the history's last call, twice in a row


def test_dynamic_instructions_are_taken_once_and_put_first() -> None:
    def instructions(ctx: Any) -> str:
        return "be brief"

    run = Run("r", [{"role": "user", "content": "go"}], instructions=instructions)
    assert run.take_instructions() is instructions and run.take_instructions() is None
    run.add_system("be brief")
    assert run.messages[0] == {"role": "system", "content": "be brief"} and run.new_start == 1


async def test_a_replayed_run_is_the_state_the_live_run_wrote(tmp_path: Path) -> None:
    tools = ToolRegistry()

    @tools.tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    journal = SQLiteJournal(tmp_path / "j.db")
    model = ScriptedModel(
        [tool_calls(call("lookup", {"key": "a"}), call("lookup", {"key": "b"})), text("done")]
    )
    result = await Agent(client=model, tools=tools, journal=journal).run("go", run_id="live")
    loaded = await journal.load("live")
    state = replay(loaded)
    run = Run.from_replay("live", state, int(loaded.header["new_start"]))
    assert run.messages == result.messages and run.steps == result.steps
    assert [(r.id, r.status, r.content) for r in run.tool_calls] == [
        (r.id, r.status, r.content) for r in result.tool_calls
    ]
    assert run.final is not None and run.final.output == "done" and run.ended
    assert run.total_usage() == result.usage and run.new_start == result.new_start


# --- limits.py: the one place limits are interpreted ---------------------------------------------


@given(
    max_steps=st.none() | st.integers(1, 5),
    max_tokens=st.none() | st.integers(1, 50),
    steps=st.integers(0, 6),
    tokens=st.integers(0, 60),
)
def test_a_request_is_refused_exactly_when_a_budget_is_spent(
    max_steps: int | None, max_tokens: int | None, steps: int, tokens: int
) -> None:
    hit = RunLimits(max_steps=max_steps, max_total_tokens=max_tokens).before_request(steps, tokens)
    steps_spent = max_steps is not None and steps >= max_steps
    tokens_spent = max_tokens is not None and tokens >= max_tokens
    if steps_spent:
        assert hit is not None and hit[0] is StepLimitExceeded  # steps are checked first
    elif tokens_spent:
        assert hit is not None and hit[0] is TokenLimitExceeded and str(tokens) in hit[1]
    else:
        assert hit is None


@given(max_calls=st.none() | st.integers(1, 5), used=st.integers(0, 6))
def test_calls_left_is_the_tool_call_budget(max_calls: int | None, used: int) -> None:
    limits = RunLimits(max_tool_calls=max_calls)
    assert limits.calls_left(used) == (max_calls is None or used < max_calls)
    cls, message = limits.calls_exceeded()
    assert cls is ToolCallLimitExceeded and f"max_tool_calls={max_calls}" in message
