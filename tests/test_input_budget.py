"""InputBudget on model answers: every hostile answer of issue #15 costs its own run a bounded amount
and ends in a tool error fed back to the model (or a typed error), through the public API, over the
real-HTTP fake router, on asyncio and trio."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import assert_valid_conversation, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    APIResponseError,
    ConfigurationError,
    FluxClient,
    InputBudget,
    RetryPolicy,
    RunLimits,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, raw, text, tool_calls

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(max_retries=0)
BUDGET = InputBudget()


def int_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def takes_ints(xs: list[int]) -> int:
        return sum(xs)

    @tools.tool
    async def maybe_ints(xs: list[int] | None = None) -> int:  # an anyOf schema
        return sum(xs or ())

    @tools.tool
    async def takes_any(x: object) -> str:
        return "ran"

    return tools


async def run_over_http(router_replies, tools: ToolRegistry, wire: str = "openai", **agent_options):
    """One run against the fake router; returns (result, the requests the router saw)."""
    async with FakeFluxRouter(router_replies) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="k", retry=NO_RETRY) as client:
            result = await Agent(client=client, tools=tools, **agent_options).run("go")
        return result, router.model_requests


def tool_messages(result) -> list[dict]:
    return [m for m in result.messages if m["role"] == "tool"]


# --- issue #15 repros --------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["takes_ints", "maybe_ints"])
async def test_100k_bad_items_give_a_short_error_listing_the_first_violations(tool: str) -> None:
    # Issue #15: 6.1 s on the loop, a 4.4 MB error text, 396 MB RSS.
    result, requests = await run_over_http(
        [tool_calls(call(tool, {"xs": ["s"] * 100_000})), text("done")], int_tools()
    )
    (msg,) = tool_messages(result)
    assert result.tool_calls[0].status == "invalid_arguments"
    assert len(msg["content"].encode()) <= BUDGET.max_error_bytes
    if tool == "takes_ints":
        assert "more than 5 schema violations; the first 5:" in msg["content"]
        assert "$.xs[0]: 's' is not of type 'integer'" in msg["content"]
        assert "$.xs[4]" in msg["content"] and "$.xs[5]" not in msg["content"]
    else:
        # `list[int] | None`: the list branch's first error, the one the model can fix (round 5)
        assert "$.xs[0]: 's' is not of type 'integer'" in msg["content"]
    # the next request carries the short text, not megabytes
    assert requests[1].json["messages"][-1]["content"] == msg["content"]


async def test_arguments_over_the_byte_budget_are_refused_without_echo() -> None:
    big = "a" * (10 * 1024 * 1024)  # issue #15: a 10 MB bad argument became a 10 MB tool message
    result, _ = await run_over_http([tool_calls(call("takes_ints", {"xs": big})), text("done")], int_tools())
    (msg,) = tool_messages(result)
    assert "more than the limit of 1048576 bytes" in msg["content"]
    assert len(msg["content"]) < 1000


async def test_a_large_bad_value_within_the_budget_is_echoed_only_in_part() -> None:
    value = "b" * 900_000
    result, _ = await run_over_http(
        [tool_calls(call("takes_ints", {"xs": value})), text("done")], int_tools()
    )
    (msg,) = tool_messages(result)
    assert "$.xs: 'bbbb" in msg["content"] and "is not of type 'array'" not in msg["content"][:300]
    assert len(msg["content"].encode()) <= BUDGET.max_error_bytes


async def test_a_1mb_tool_name_is_echoed_in_part() -> None:
    name = "n" * 1_000_000
    result, requests = await run_over_http([tool_calls(call(name, {})), text("done")], int_tools())
    (msg,) = tool_messages(result)
    assert result.tool_calls[0].status == "unknown_tool"
    assert f"'{'n' * 256}…[1000000 characters, cut]'" in msg["content"]
    assert len(msg["content"]) < 2000
    assert len(requests[1].json["messages"][-1]["content"]) < 2000


@pytest.mark.parametrize("depth", [65, 200, 1000, 5000])
async def test_deeply_nested_arguments_are_a_tool_error_not_a_crash(depth: int) -> None:
    # Issue #15: 1000 levels raised RecursionError out of Agent.run (the loop guard's stdlib json).
    args = '{"x": ' + "[" * depth + "]" * depth + "}"
    replies = [tool_calls(call("takes_any", args)), tool_calls(call("takes_any", args)), text("done")]
    result, _ = await run_over_http(replies, int_tools(), limits=RunLimits(loop_threshold=2))
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "loop_detected"]
    assert f"nested deeper than {BUDGET.max_json_depth} levels" in result.tool_calls[0].content


async def test_arguments_at_the_depth_limit_still_run() -> None:
    depth = BUDGET.max_json_depth - 1  # the arguments object itself is one level
    args = '{"x": ' + "[" * depth + "]" * depth + "}"
    result, _ = await run_over_http([tool_calls(call("takes_any", args)), text("done")], int_tools())
    assert result.tool_calls[0].status == "ok"


async def test_deep_anthropic_tool_use_input_is_a_tool_error_or_a_typed_error() -> None:
    def nested(n: int) -> str:
        return "[" * n + "]" * n

    def body(n: int) -> str:
        block = f'{{"type": "tool_use", "id": "toolu_1", "name": "takes_any", "input": {{"x": {nested(n)}}}}}'
        return f'{{"type": "message", "role": "assistant", "content": [{block}], "stop_reason": "tool_use"}}'

    result, _ = await run_over_http([raw(200, body(100)), text("done")], int_tools(), wire="anthropic")
    assert result.tool_calls[0].status == "invalid_arguments"
    assert "nested deeper than 64 levels" in result.tool_calls[0].content
    with pytest.raises(APIResponseError, match="nested deeper than 200 levels"):
        await run_over_http([raw(200, body(1000))], int_tools(), wire="anthropic")


@pytest.mark.parametrize("depth", [128, 150, 199, 200])
async def test_deep_tool_use_input_text_is_not_replayed_past_the_codecs_limit(depth: int) -> None:
    # Found by the fuzz suite: a tool_use "input" given as JSON text 199 levels deep was refused
    # (deeper than max_json_depth), but replayed whole; the next request body was then deeper than
    # the 200 levels a router's parser accepts, and the run failed with a 400.
    nested = '{"a":' * depth + "1" + "}" * depth
    block = {"type": "tool_use", "id": "toolu_1", "name": "takes_any", "input": nested}
    body = {"type": "message", "role": "assistant", "content": [block], "stop_reason": "tool_use"}
    result, requests = await run_over_http(
        [raw(200, json.dumps(body)), text("done")], int_tools(), wire="anthropic"
    )
    assert result.output == "done"
    assert result.tool_calls[0].status == "invalid_arguments"
    assert requests[1].json is not None  # the router could parse the replayed conversation


async def test_a_backtracking_pattern_runs_in_linear_time() -> None:
    # Issue #15: ^(a+)+$ against 28 characters took 59 s on the loop (Python's re backtracks).
    tools = ToolRegistry()

    async def check(s: str) -> str:
        return "matched"

    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "required": ["s"],
    }
    tools.register(check, parameters=schema)
    replies = [tool_calls(call("check", {"s": "a" * 28 + "!"}), call("check", {"s": "aaa"})), text("done")]
    result, _ = await run_over_http(replies, tools)
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "ok"]
    assert "does not match '^(a+)+$'" in result.tool_calls[0].content


_FAST_PATH_REDOS = """
import resource, anyio
from typing import Annotated
from pydantic import Field
from agentloop import Agent, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))  # Python's re would need ~2**40 steps: killed here
tools = ToolRegistry()

@tools.tool
def check(s: Annotated[str, Field(pattern=r"^(a+)+$")]) -> str:
    "check"
    return "matched"

model = ScriptedModel([tool_calls(call("check", {"s": "a" * 40 + "!"}), call("check", {"s": "aaa"})), text("done")])
result = anyio.run(Agent(client=model, tools=tools).run, "go")
print([r.status for r in result.tool_calls])
"""


def test_the_fast_check_searches_a_pattern_in_linear_time_too() -> None:
    # Regression: the argument fast path (a schema of the common shape: additionalProperties
    # false, as every registered function gets) searched `pattern` with Python's re before the
    # RE2 validator ever saw it; 26 characters cost 2 s of CPU on the loop, 40 never end.
    out = subprocess.run(
        [sys.executable, "-c", _FAST_PATH_REDOS], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['invalid_arguments', 'ok']"


async def test_pattern_properties_and_additional_properties_use_the_linear_engine() -> None:
    tools = ToolRegistry()

    async def props(**kwargs: object) -> str:
        return "ok"

    schema = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    tools.register(props, name="props", parameters=schema)
    bad_key = "a" * 40 + "!"
    replies = [
        tool_calls(call("props", {bad_key: 1}), call("props", {"aaaa": 1}), call("props", {"aa": "x"})),
        text("done"),
    ]
    result, _ = await run_over_http(replies, tools)
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "ok", "invalid_arguments"]
    assert "Additional properties are not allowed" in result.tool_calls[0].content


@pytest.mark.parametrize("pattern", ["(?=a)b", r"(a)\1", "(?<!x)y"])
def test_a_pattern_re2_cannot_compile_is_refused_at_registration(pattern: str) -> None:
    tools = ToolRegistry()
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    with pytest.raises(ToolDefinitionError, match="cannot be compiled by RE2"):
        tools.register(lambda s: s, name="t", parameters=schema)
    with pytest.raises(ToolDefinitionError, match="cannot be compiled by RE2"):
        tools.register(
            lambda **kw: kw, name="u", parameters={"type": "object", "patternProperties": {pattern: {}}}
        )
    assert "t" not in tools and "u" not in tools


def test_patterns_with_unevaluated_properties_are_refused_at_registration() -> None:
    schema = {"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    with pytest.raises(ToolDefinitionError, match="unevaluatedProperties"):
        ToolRegistry().register(lambda **kw: kw, name="t", parameters=schema)


def test_pattern_text_in_enum_or_default_data_is_not_compiled() -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "enum": ["(?=x)"], "default": "(?=x)"}},
    }
    ToolRegistry().register(lambda s: s, name="t", parameters=schema)  # data, not a regex: no error


async def test_tool_calls_over_the_per_message_budget_get_a_tool_error_each() -> None:
    budget = InputBudget(max_tool_calls=3)
    calls = [call("takes_ints", {"xs": [i]}) for i in range(5)]
    result, requests = await run_over_http(
        [tool_calls(*calls), text("done")], int_tools(), input_budget=budget
    )
    assert [r.status for r in result.tool_calls] == ["ok"] * 3 + ["too_many_calls"] * 2
    assert (
        "the message has 5 tool calls, more than the limit of 3 per message" in result.tool_calls[4].content
    )
    assert_valid_conversation(requests[1].json["messages"])
    assert result.output == "done"


async def test_a_message_with_thousands_of_calls_stays_a_valid_conversation() -> None:
    calls = [call("takes_ints", {"xs": [i]}) for i in range(3000)]
    model = ScriptedModel([tool_calls(*calls), text("done")])
    result = await Agent(client=model, tools=int_tools(), limits=RunLimits(max_tool_calls=None)).run("go")
    statuses = [r.status for r in result.tool_calls]
    assert statuses.count("ok") == BUDGET.max_tool_calls
    assert statuses.count("too_many_calls") == 3000 - BUDGET.max_tool_calls
    assert_valid_conversation(result.messages)


async def test_a_huge_exception_message_is_cut_to_the_error_budget() -> None:
    tools = ToolRegistry()

    @tools.tool
    async def explode() -> str:
        raise RuntimeError("x" * 5_000_000)

    budget = InputBudget(max_error_bytes=1000)
    result, _ = await run_over_http(
        [tool_calls(call("explode", {})), text("done")], tools, input_budget=budget
    )
    content = result.tool_calls[0].content
    assert len(content.encode()) <= 1000
    assert content.startswith("Tool 'explode' raised RuntimeError: xxx")
    assert content.endswith("[error text truncated: 5000036 bytes, limit 1000]")


async def test_the_agent_takes_the_clients_budget_unless_given_its_own() -> None:
    model = ScriptedModel([text("hi")])
    assert Agent(client=model).input_budget == InputBudget()
    own = InputBudget(max_tool_calls=7)
    assert Agent(client=model, input_budget=own).input_budget is own

    class BudgetedModel(ScriptedModel):
        input_budget = InputBudget(max_violations=2)

    assert Agent(client=BudgetedModel([text("x")])).input_budget.max_violations == 2
    with pytest.raises(ConfigurationError, match="input_budget must be an InputBudget"):
        Agent(client=model, input_budget={"max_tool_calls": 3})  # type: ignore[arg-type]


def test_the_depth_budget_cannot_pass_the_codecs_limit() -> None:
    with pytest.raises(ConfigurationError, match="max_json_depth must be at most 128"):
        InputBudget(max_json_depth=129)
    assert InputBudget(max_json_depth=128).max_json_depth == 128


async def test_max_violations_is_honoured() -> None:
    budget = InputBudget(max_violations=2)
    result, _ = await run_over_http(
        [tool_calls(call("takes_ints", {"xs": ["a", "b", "c"]})), text("done")],
        int_tools(),
        input_budget=budget,
    )
    content = result.tool_calls[0].content
    assert "more than 2 schema violations; the first 2:" in content
    assert "$.xs[1]" in content and "$.xs[2]" not in content


# --- properties of the truncation ---------------------------------------------------------------


@given(st.text(), st.integers(min_value=1, max_value=4096))
def test_truncated_error_texts_fit_the_budget_and_keep_their_start(s: str, limit: int) -> None:
    from agentloop._tools.arguments import truncate  # internal unit under test

    out = truncate(s, limit)
    assert len(out.encode("utf-8", "surrogatepass")) <= limit
    if len(s.encode("utf-8", "surrogatepass")) <= limit:
        assert out == s
    elif limit >= 200:
        assert "[error text truncated:" in out
        kept = out[: out.index("\n[error text truncated:")]
        assert s.startswith(kept)


@settings(max_examples=examples(30))
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c),
        max_leaves=30,
    )
)
def test_the_depth_check_agrees_with_a_recursive_definition(value: object) -> None:
    from agentloop._json import depth_exceeds  # internal unit under test

    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    d = depth(value)
    for limit in range(0, 8):
        assert depth_exceeds(value, limit) == (d > limit)
    assert json.loads(json.dumps(value)) == value
