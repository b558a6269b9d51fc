"""Hypothesis strategies for hostile model answers on both wires, and the check every one must pass.

Shared by `tests/test_fuzz_answers.py` (a few examples per run of the suite) and
`benchmarks/fuzz.py` (~10,000). A strategy draws a whole HTTP response body (bytes): valid and
invalid JSON, every shape of `tool_calls` / `tool_use`, huge and deep values, wrong types at every
level. `run_one` plays it to a real run over the fake router and returns how the run ended, or
raises AssertionError when the run ended in anything but a final answer (tool errors fed back
included) or a typed `AgentloopError`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import strategies as st

from agentloop import Agent, AgentloopError, InputBudget, ToolRegistry
from agentloop.testing import raw, text

BUDGET = InputBudget()
NAMES = ["takes_ints", "echo", "maybe_ints", "check", "explode"]


def fuzz_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def takes_ints(xs: list[int]) -> int:
        return sum(xs)

    @tools.tool
    async def echo(text: str, n: int = 1) -> str:
        return text[:100] * min(n, 3) if isinstance(n, int) else text

    @tools.tool
    async def maybe_ints(xs: list[int] | None = None) -> int:
        return len(xs or ())

    @tools.tool
    async def explode(why: str = "") -> str:
        raise RuntimeError(why * 1000)

    async def check(s: str) -> str:
        return "ok"

    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "required": ["s"],
    }
    tools.register(check, parameters=schema)
    return tools


# --- JSON values: scalars, wrong types, huge and deep ------------------------------------------

SIZES = st.sampled_from([0, 1, 10, 300, 10_000, 200_000, BUDGET.max_argument_bytes + 10])
DEPTHS = st.sampled_from([1, 2, 10, 63, 64, 65, 199, 200, 201, 254, 1000, 1025])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "s",
            "a" * 28 + "!",
            "\u0000",
            "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        ]
    ),
)


@st.composite
def huge_string(draw: Any) -> str:
    return draw(st.sampled_from("ab\u00e9\U0001f600")) * draw(SIZES)


@st.composite
def deep_text(draw: Any) -> str:
    """JSON text nested `depth` levels deep (arrays or objects), built without recursion."""
    depth = draw(DEPTHS)
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


values = st.recursive(
    scalars | huge_string(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def arguments_text(draw: Any) -> Any:
    """What a model puts in `arguments`: usually JSON text, sometimes anything."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(deep_text())
    if kind == 1:  # invalid JSON
        return draw(
            st.sampled_from(['{"xs": [1,', "{", "nope", "[1, 2]", "null", '"str"', "", "{}}", "\udcff"])
        )
    if kind == 2:  # already-parsed object, or any value at all
        return draw(values)
    if kind == 3:  # 100k wrong items (issue #15)
        return dumps({"xs": ["s"] * draw(st.sampled_from([10, 1000, 100_000]))})
    if kind == 4:
        return dumps({"s": draw(huge_string())})
    if kind == 5:
        return dumps({"xs": draw(st.lists(st.integers(-5, 5), max_size=20))})
    return dumps(
        draw(st.dictionaries(st.sampled_from(["xs", "text", "n", "s", "why", "x"]), values, max_size=4))
    )


@st.composite
def tool_name(draw: Any) -> Any:
    return draw(
        st.one_of(
            st.sampled_from(NAMES),
            st.sampled_from(NAMES),
            st.text(max_size=10),
            st.builds(lambda n: "n" * n, SIZES),
            scalars,
        )
    )


def mutate(draw: Any, value: Any) -> Any:
    """Sometimes replace the value with one of a wrong type: wrong types at every level."""
    if draw(st.integers(0, 15)) == 0:
        return draw(values)
    return value


# --- OpenAI wire ---------------------------------------------------------------------------------


@st.composite
def openai_call(draw: Any) -> Any:
    fn = mutate(draw, {"name": draw(tool_name()), "arguments": draw(arguments_text())})
    if isinstance(fn, dict) and draw(st.booleans()):
        fn.pop(draw(st.sampled_from(["name", "arguments"])), None)
    call = {
        "id": draw(st.one_of(st.just(None), st.text(max_size=8), st.integers())),
        "type": "function",
        "function": fn,
    }
    if draw(st.booleans()):
        call["index"] = draw(st.one_of(st.integers(-2, 3), scalars))
    return mutate(draw, call)


@st.composite
def openai_body(draw: Any) -> bytes:
    n = draw(st.sampled_from([0, 1, 2, 3, 5, BUDGET.max_tool_calls + 2]))
    if n > 5:  # many calls, each small (a body of 130 huge calls is the HTTP budget's business)
        calls = [
            {"id": f"c{i}", "function": {"name": "echo", "arguments": dumps({"text": str(i)})}}
            for i in range(n)
        ]
    else:
        calls = [draw(openai_call()) for _ in range(n)]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": mutate(draw, draw(st.one_of(st.none(), st.text(max_size=20)))),
    }
    if calls:
        message["tool_calls"] = mutate(draw, calls[:n])
    if draw(st.integers(0, 9)) == 0:
        legacy = draw(openai_call())
        message["function_call"] = legacy.get("function") if isinstance(legacy, dict) else legacy
    choice = mutate(draw, {"index": 0, "message": mutate(draw, message), "finish_reason": "tool_calls"})
    body = mutate(
        draw,
        {
            "id": "x",
            "object": "chat.completion",
            "choices": mutate(draw, [choice]),
            "usage": mutate(draw, {}),
        },
    )
    return finish(draw, body)


# --- Anthropic wire ------------------------------------------------------------------------------


@st.composite
def anthropic_block(draw: Any) -> Any:
    if draw(st.integers(0, 3)) == 0:
        return mutate(draw, {"type": "text", "text": draw(st.text(max_size=20))})
    raw_input = draw(arguments_text())
    if isinstance(raw_input, str) and draw(st.booleans()):
        try:  # mostly an object, as the wire says; sometimes the text itself
            raw_input = json.loads(raw_input)
        except (ValueError, RecursionError):
            pass
    block = {
        "type": "tool_use",
        "id": draw(st.one_of(st.text(max_size=8), scalars)),
        "name": draw(tool_name()),
        "input": raw_input,
    }
    return mutate(draw, block)


@st.composite
def anthropic_body(draw: Any) -> bytes:
    n = draw(st.sampled_from([0, 1, 2, 3, BUDGET.max_tool_calls + 2]))
    if n > 4:  # many calls, each small
        blocks = [
            {"type": "tool_use", "id": f"t{i}", "name": "echo", "input": {"text": str(i)}} for i in range(n)
        ]
    else:
        blocks = [draw(anthropic_block()) for _ in range(n)]
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": mutate(draw, blocks),
        "stop_reason": mutate(draw, "tool_use"),
        "usage": mutate(draw, {"input_tokens": 1, "output_tokens": 1}),
    }
    return finish(draw, mutate(draw, body))


def finish(draw: Any, body: Any) -> bytes:
    """Encode the body; sometimes damage the bytes (truncated, garbage, not UTF-8)."""
    try:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        data = b'{"broken": '
    damage = draw(st.integers(0, 23))
    if damage == 0:
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if damage == 1:
        return draw(st.binary(max_size=64))
    if damage == 2:
        return b"\xff\xfe" + data
    return data


# --- the check -------------------------------------------------------------------------------------

FINAL = "done"


class AnswerServer:
    """The fake router's handler: the example's body for a run's first request, then a final text.

    `FakeFluxRouter(server.handler)`; set `server.body` before each run.
    """

    def __init__(self) -> None:
        self.body = b"{}"
        self.router: Any = None  # set by the harness: its recorded requests are cleared after each run

    def handler(self, request: Any) -> Any:
        messages = request.json.get("messages") if isinstance(request.json, dict) else None
        first = isinstance(messages, list) and len(messages) <= 1
        return raw(200, self.body) if first else text(FINAL)


async def run_one(client: Any, server: AnswerServer, body: bytes, tools: ToolRegistry) -> str:
    """Play `body` as the model's answer (then a final text) and check how the run ended."""
    server.body = body
    try:
        result = await Agent(client=client, tools=tools).run("go")
    except AgentloopError as e:
        return type(e).__name__
    finally:
        if server.router is not None:
            server.router.requests.clear()  # the fake router records every request: not ours to keep
    assert result.steps == 1 or result.output == FINAL, result  # the answer was final, or the run went on
    messages = result.messages
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            assert [t["tool_call_id"] for t in messages[i + 1 : i + 1 + len(ids)]] == ids
    for r in result.tool_calls:
        if r.status != "ok":
            assert len(r.content.encode("utf-8", "surrogatepass")) <= BUDGET.max_error_bytes, r.status
    statuses = sorted({r.status for r in result.tool_calls})
    return "final" + (f" ({', '.join(statuses)})" if statuses else "")


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
