"""Outside-in review, round 4: the everyday path of a new user building a multi-tool agent (tool
shapes people write, the docs' examples, run/stream on both wires, the CLI). Each test is the exact
repro of a break found from the outside (public API only), kept as a regression test; async ones
run on asyncio and trio."""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Annotated, Any

import pytest
import sandbox_tools as st
from helpers import examples
from hypothesis import given, settings
from signature_grammar import types
from typing_extensions import TypeAliasType, TypeVar

from agentloop import (
    Agent,
    ConfigurationError,
    ConversationError,
    FluxClient,
    Limits,
    RunContext,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


# --- registration: what a tool's shape tells the model and the user ------------------------------


class Lookup:
    """Looks records up in a table."""

    def __init__(self, table: dict[str, int]) -> None:
        self.table = table

    def __call__(self, key: str, default: int = 0) -> int:
        """Look a key up.

        Args:
            key: The record key.
            default: What to answer for a missing key.
        """
        return self.table.get(key, default)


def test_a_callable_object_keeps_the_parameter_docs_of_its___call__() -> None:
    # the class docstring was taken whole and __call__'s "Args:" dropped: the model saw no descriptions
    tool = ToolRegistry().register(Lookup({"a": 1}), name="lookup")
    assert tool.description == "Looks records up in a table."
    props = tool.parameters["properties"]
    assert props["key"]["description"] == "The record key."
    assert props["default"]["description"] == "What to answer for a missing key."


def test_a_sync_generator_is_refused_with_a_sync_fix() -> None:
    def rows(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    # the advice was `[x async for x in gen(...)]`, which a sync generator cannot do
    with pytest.raises(ToolDefinitionError, match=r"return list\(gen\(\.\.\.\)\)"):
        ToolRegistry().register(rows)


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (st.counter.bump, r"'Counter.bump' is a method bound to a Counter instance.*staticmethod"),
        (st.counter, r"a callable Counter instance cannot be sent.*with its state"),
        (functools.partial(st.echo, n=2), r"a functools.partial of 'echo'.*with its bound arguments"),
    ],
    ids=["bound-method", "callable-object", "partial"],
)
def test_a_process_tool_that_cannot_be_sent_by_name_says_why(fn: object, says: str) -> None:
    # was: "sandbox_tools:Counter.bump names another object, not 'bump'; define 'bump' at the top
    # level" and "define 'functools.partial(<function echo at 0x...>, n=2)' at the top level"
    with pytest.raises(ToolDefinitionError, match=says):
        ToolRegistry().register(fn, name="t", sandbox="process")  # type: ignore[arg-type]


async def test_a_classmethod_runs_in_the_process_sandbox() -> None:
    # was refused: "sandbox_tools:Counter.scaled names another object" (a classmethod is bound anew on
    # every attribute access, so the imported one is equal to the registered one, never identical)
    tools = ToolRegistry(sandbox="process", limits=Limits(timeout=30))
    tools.register(st.Counter.scaled)
    model = ScriptedModel([tool_calls(call("scaled", {"x": 4})), text("done")])
    async with tools:
        result = await Agent(client=model, tools=tools).run("go")
    assert [(r.status, r.content) for r in result.tool_calls] == [("ok", "40")]


async def _orders(status: str, ctx: RunContext[None]) -> str:
    return status


def test_a_run_context_that_is_not_first_is_refused_with_the_fix() -> None:
    # was: "parameter 'ctx' has type 'RunContext', which cannot be turned into a JSON schema: it is
    # not a JSON-compatible type. Use a supported type (str, int, ...)": the fix is to move it first
    with pytest.raises(ToolDefinitionError, match=r"RunContext parameter 'ctx' must be the first parameter"):
        ToolRegistry().register(_orders)


async def test_an_unencodable_result_names_its_type_in_a_sentence() -> None:
    tools = ToolRegistry()

    @tools.tool
    async def count(n: int) -> object:
        return 10**5000  # past CPython's int-to-str digit limit

    model = ScriptedModel([tool_calls(call("count", {"n": 1})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    (record,) = result.tool_calls
    # was "Tool 'count' returned a int that cannot be encoded as JSON"
    assert record.status == "invalid_result"
    assert record.content.startswith(
        "Tool 'count' returned a value of type int that cannot be encoded as JSON"
    )


def _log_calls(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # no functools.wraps: the usual first decorator
        return fn(*args, **kwargs)

    return wrapper


def test_a_decorator_without_wraps_is_refused_with_the_fix() -> None:
    # was only "parameter *args is not supported ... Replace it with explicit keyword parameters":
    # the user wrote explicit parameters; their decorator hid them
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match=r"decorate its wrapper with @functools\.wraps\(fn\)"):

        @tools.tool
        @_log_calls
        def get_weather(city: str) -> str:
            return city


def test_a_real_star_args_tool_gets_no_decorator_hint() -> None:
    with pytest.raises(ToolDefinitionError, match=r"\*items is not supported") as caught:
        ToolRegistry().register(lambda x, *items: x, name="t")
    assert "functools.wraps" not in str(caught.value)


def test_tool_above_classmethod_in_a_class_body_says_to_register_after_the_class() -> None:
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match=r"register `Cls\.method` after the class body"):

        class Prices:
            @tools.tool  # type: ignore[arg-type]
            @classmethod
            def quote(cls, sku: str) -> int:
                return 1


# --- the everyday run path -----------------------------------------------------------------------


async def test_async_for_directly_over_agent_stream_says_how_to_use_it() -> None:
    # was: TypeError "'async for' requires an object with __aiter__ method, got _Once"
    agent = Agent(client=ScriptedModel([text("hi")]))
    with pytest.raises(ConfigurationError, match=r"write `async with agent\.stream\(\.\.\.\) as events:`"):
        async for _ in agent.stream("hi"):  # type: ignore[attr-defined]
            pass
    with pytest.raises(ConfigurationError, match=r"or `await agent\.run\(\.\.\.\)` for the result alone"):
        await agent.stream("hi")  # type: ignore[misc]
    async with agent.stream("hi") as events:  # the documented spelling still works
        kinds = [type(e).__name__ async for e in events]
    assert kinds[-1] == "RunFinished"


def test_the_client_class_instead_of_an_instance_is_refused_at_construction() -> None:
    # `client=FluxClient` (parentheses forgotten) was accepted; the run then raised a raw
    # AttributeError "'ModelRequest' object has no attribute '_binding'"
    with pytest.raises(ConfigurationError, match=r"client is the class FluxClient, not an instance"):
        Agent(client=FluxClient)  # type: ignore[arg-type]


async def _echo(text: str) -> str:
    return text


@pytest.mark.parametrize(
    ("tools", "fix"),
    [
        ({"echo": _echo}, r"tools=list\(your_dict\.values\(\)\)"),  # was: "tools=[{'echo': <function ...>}]"
        ({_echo}, r"tools=list\(your_set\)"),
        (_echo, r"Wrap a single function in a list: tools=\[_echo\]"),
    ],
    ids=["dict", "set", "function"],
)
def test_tools_that_are_not_a_list_get_the_fix_that_fits(tools: object, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix):
        Agent(client=ScriptedModel([]), tools=tools)  # type: ignore[arg-type]


def test_anthropic_any_as_tool_choice_points_to_required() -> None:
    with pytest.raises(ConfigurationError, match=r"Anthropic's 'any' is spelt 'required' here"):
        Agent(client=ScriptedModel([]), tools=[_echo], tool_choice="any")


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ],
    ids=["tool_use", "tool_result"],
)
async def test_a_conversation_in_anthropic_format_is_refused_saying_which_format_to_use(
    message: dict[str, Any],
) -> None:
    # was only "a assistant message's parts are dicts of type ['text', 'refusal']": a user storing
    # conversations from the Anthropic SDK did not learn that messages= is OpenAI chat format
    agent = Agent(client=ScriptedModel([text("never asked")]))
    with pytest.raises(ConversationError, match=r"looks like an Anthropic Messages block.*'tool_calls'"):
        await agent.run("next", messages=[{"role": "user", "content": "hi"}, message])


async def test_an_async_tool_returning_an_unawaited_coroutine_says_await_it() -> None:
    async def fetch(x: int) -> int:
        return x

    tools = ToolRegistry()

    @tools.tool
    async def lookup(x: int) -> int:
        return fetch(x)  # type: ignore[return-value]  # the missing await

    model = ScriptedModel([tool_calls(call("lookup", {"x": 1})), text("done")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the coroutine is closed: no "never awaited" warning
        result = await Agent(client=model, tools=tools).run("go")
    # was invalid_result "returned a value of type coroutine that cannot be encoded as JSON" (and a
    # RuntimeWarning); a sync tool doing the same was already told about the missing await
    (record,) = result.tool_calls
    assert record.status == "raised"
    assert "a coroutine it did not await (a missing `await`?)" in record.content


async def test_a_process_tool_missing_a_relative_file_is_told_where_it_runs() -> None:
    # was only "No such file or directory: 'config.json'", with config.json beside the user's
    # script: the call's current directory is its own scratch, which nothing said
    tools = ToolRegistry(sandbox="process", limits=Limits(timeout=30))
    tools.register(st.read_relative)
    model = ScriptedModel([tool_calls(call("read_relative", {"name": "config.json"})), text("done")])
    async with tools:
        result = await Agent(client=model, tools=tools).run("go")
    (record,) = result.tool_calls
    assert record.status == "raised" and "FileNotFoundError" in record.content
    assert "runs in a scratch directory of its own, not the host's current directory" in record.content


@pytest.mark.parametrize(
    "prompt", [[{"type": "text", "text": "hi"}], {"role": "user", "content": "hi"}], ids=["parts", "message"]
)
async def test_a_prompt_of_parts_or_a_message_is_pointed_to_messages(prompt: object) -> None:
    # was only "prompt must be a str, got list": where an image or a message goes was not said
    agent = Agent(client=ScriptedModel([text("never asked")]))
    with pytest.raises(
        ConversationError, match=r"go in messages=\[\{'role': 'user', 'content': \[\.\.\.\]\}\]"
    ):
        await agent.run(prompt)  # type: ignore[arg-type]


# --- type aliases (`type X = ...` of Python 3.12; typing_extensions.TypeAliasType before it) ----

_T = TypeVar("_T")
Celsius = TypeAliasType("Celsius", Annotated[float, "degrees C"])
Pair = TypeAliasType("Pair", tuple[_T, _T], type_params=(_T,))
Names = TypeAliasType("Names", list[str])


async def test_a_type_alias_parameter_is_its_value() -> None:
    # was refused: "parameter 'c' has type Celsius, which cannot be turned into a JSON schema: it is
    # not a JSON-compatible type"
    tools = ToolRegistry()

    @tools.tool
    async def plan(c: Celsius, p: Pair[int], names: Names) -> str:
        return repr((c, p, names))

    props = tools.get("plan").parameters["properties"]  # type: ignore[union-attr]
    assert props["c"] == {"type": "number", "description": "degrees C"}
    assert props["p"]["prefixItems"] == [{"type": "integer"}, {"type": "integer"}]
    model = ScriptedModel([tool_calls(call("plan", {"c": 21, "p": [1, 2], "names": ["a"]})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == ["(21.0, (1, 2), ['a'])"]


def test_a_type_alias_spelt_as_a_string_is_refused_with_the_fix() -> None:
    Tree = TypeAliasType("Tree", "dict[str, Tree] | int")

    def grow(t: Tree) -> str:  # type: ignore[valid-type]
        return ""

    with pytest.raises(
        ToolDefinitionError, match=r"type alias Tree is the string .*use the `type` statement"
    ):
        ToolRegistry().register(grow)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the `type` statement is Python 3.12+")
def test_a_recursive_type_statement_alias_is_a_ref() -> None:
    namespace: dict[str, Any] = {}
    exec("type Json = dict[str, Json] | list[Json] | int\ndef load(j: Json) -> str: return ''", namespace)
    schema = ToolRegistry().register(namespace["load"]).parameters
    assert schema["properties"]["j"] == {"$ref": "#/$defs/Json"}
    assert schema["$defs"]["Json"]["anyOf"][0]["additionalProperties"] == {"$ref": "#/$defs/Json"}


@settings(max_examples=examples(25))
@given(types(2))
def test_any_type_behind_an_alias_gives_the_schema_of_the_type(tp: Any) -> None:
    # the grammar's types (nested records, unions, Annotated, containers) through one alias
    alias = TypeAliasType("Alias", tp)
    plain = ToolRegistry().register(_typed_as(tp), name="t").parameters
    aliased = ToolRegistry().register(_typed_as(alias), name="t").parameters
    assert aliased == plain


def _typed_as(tp: Any) -> Any:
    def tool(x):  # type: ignore[no-untyped-def]
        return x

    tool.__annotations__ = {"x": tp}
    return tool
