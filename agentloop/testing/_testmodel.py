"""`TestModel` and `FunctionModel`: in-memory `Model`s for testing an agent without HTTP.

- `TestModel` exercises every tool: on its first step it calls each one (or a chosen subset)
  with arguments generated from the tool's JSON schema by `hypothesis-jsonschema`, then answers
  with a JSON summary of the results. Generation is derandomized, so a test sees the same
  arguments on every run; it checks that each schema, converter and tool works end to end.
- `FunctionModel(fn)` answers with whatever `fn(messages, tools)` returns: exact scripts that
  can look at the conversation.

Both keep no state about a run (a `TestModel` decides from the conversation whether it has
called its tools yet; it only remembers which tool names it was offered), so one instance can
serve concurrent runs.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from agentloop import ConfigurationError, MissingDependencyError, ModelTurn, Usage, normalize_message
from agentloop.abc import Emit, ModelRequest
from agentloop.testing import _codec
from agentloop.testing._replies import Reply, ScriptedCall

__all__ = ["TestModel", "FunctionModel", "generate_arguments"]

CallSpec = ScriptedCall | tuple[str, Any] | dict[str, Any]
FunctionResult = ModelTurn | Reply | str | Sequence[CallSpec]
ModelFunction = Callable[
    [list[dict[str, Any]], list[dict[str, Any]]], "FunctionResult | Awaitable[FunctionResult]"
]


def _usage(messages: list[dict[str, Any]], answer: dict[str, Any]) -> Usage:
    """A deterministic stand-in for token counts (about 4 characters a token), never zero."""
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
    completion = len(_codec.dumps_str(answer)) // 4 + 1
    return Usage(1, prompt, completion, prompt + completion)


def _turn(
    messages: list[dict[str, Any]], content: str | None, calls: Iterable[tuple[str, Any]] = ()
) -> ModelTurn:
    raw: dict[str, Any] = {"role": "assistant", "content": content}
    tool_calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else _codec.dumps_str(args),
            },
        }
        for i, (name, args) in enumerate(calls, 1)
    ]
    if tool_calls:
        raw["tool_calls"] = tool_calls
    message = normalize_message(raw)
    return ModelTurn(message, _usage(messages, message), "tool_calls" if tool_calls else "stop", model="test")


# --- argument generation ------------------------------------------------------------------------


def _to_draft7(schema: Any) -> Any:
    """Rewrite 2020-12 tuple keywords (`prefixItems`) into the draft-7 form hypothesis-jsonschema reads."""
    if isinstance(schema, list):
        return [_to_draft7(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _to_draft7(v) for k, v in schema.items()}
    if "prefixItems" in out:
        prefix = out.pop("prefixItems")
        rest = out.pop("items", True)
        out["items"] = prefix
        out["additionalItems"] = rest
    out.pop("$schema", None)  # our schemas are 2020-12; the translated one must not claim it
    return out


def _strategy(schema: dict[str, Any]) -> tuple[Any, Any, Callable[[Any], bool]]:
    """(the hypothesis module, a strategy for `schema`, its 2020-12 validity check)."""
    try:
        import hypothesis
        from hypothesis_jsonschema import from_schema
    except ImportError as e:
        raise MissingDependencyError(
            f"TestModel generates tool arguments with hypothesis-jsonschema ({e}). Install it with: "
            "pip install 'agentloop[testing]'"
        ) from None
    from hypothesis import strategies as st
    from jsonschema import Draft202012Validator

    # Formats are checked too: a "uuid" or "date-time" string must parse, or the tool's
    # converter would reject it. hypothesis-jsonschema has no "uuid" strategy of its own.
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    strategy = from_schema(_to_draft7(schema), custom_formats={"uuid": st.uuids().map(str)})
    return hypothesis, strategy, validator.is_valid


def _settings(hypothesis: Any) -> Any:
    return hypothesis.settings(
        database=None,  # no example database files written into the user's project
        derandomize=True,
        max_examples=200,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )


def generate_arguments(schema: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """One arguments object that satisfies `schema`, the same one for the same schema and seed.

    Uses `hypothesis-jsonschema` (install `agentloop[testing]`), derandomized; every value is
    checked against the 2020-12 schema itself (hypothesis-jsonschema reads draft 7).
    """
    hypothesis, strategy, valid = _strategy(schema)
    settings = _settings(hypothesis)
    # No shrinking: the first valid example is already simple (hypothesis tries the simplest
    # first), and `seed` picks a later distinct one, still deterministically.
    seen: list[dict[str, Any]] = []

    def wanted(value: Any) -> bool:
        # Arguments are an object: a schema that also admits other JSON values yields only objects.
        if not isinstance(value, dict) or not valid(value):
            return False
        if value not in seen:
            seen.append(value)
        return len(seen) > seed

    try:
        found = hypothesis.find(strategy, wanted, settings=settings)
    except hypothesis.errors.NoSuchExample:
        if seen:  # fewer distinct values than `seed` asked for (e.g. `{}` only): cycle through them
            return seen[seed % len(seen)]
        problem = "no value satisfying the schema was found"
    except (AttributeError, TypeError) as e:  # hypothesis-jsonschema uses hypothesis internals
        raise MissingDependencyError(
            f"hypothesis-jsonschema {_version('hypothesis-jsonschema')} does not work with hypothesis "
            f"{_version('hypothesis')} ({type(e).__name__}: {e}). Install a compatible pair: "
            "pip install 'hypothesis<6.170.10' (or `pip install 'agentloop[testing]'`)."
        ) from None
    except Exception as e:  # Unsatisfiable, or a schema hypothesis-jsonschema cannot read
        problem = f"{type(e).__name__}: {e}"
    else:
        assert isinstance(found, dict), "wanted() accepts objects only"
        return found
    raise ConfigurationError(
        f"TestModel could not generate arguments for the schema {json.dumps(schema)[:300]} ({problem}). "
        "Leave this tool out with TestModel(call_tools=[...]) and script its calls with FunctionModel, "
        "or give its arguments with TestModel(arguments={tool_name: {...}})."
    )


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(unknown version)"


# --- TestModel -------------------------------------------------------------------------------------


class TestModel:
    """A `Model` that calls every tool once with schema-valid arguments, then summarises the results.

    ```python
    result = await Agent(client=TestModel(), tools=tools).run("anything")
    assert all(r.ok for r in result.tool_calls)
    ```

    - `call_tools`: `"all"` (default) or the names of the tools to call, in that order.
    - `arguments`: fixed arguments for some tools, `{name: {...}}`, instead of generated ones. A
      name no tool has is an error (a typo would otherwise leave that tool on generated
      arguments, silently): `ConfigurationError` naming it, raised when the TestModel gives a
      final answer and none of the tools it was offered so far, in any request, has that name.
      Not per request, so one TestModel can serve handoffs and agents used as tools, whose tools
      it meets later in the run; a TestModel reused by agents with other tools in separate runs
      should be given only the names of the tools of the runs so far (or one TestModel each).
      (An unknown *parameter* inside `{...}` is sent as is: the tool's validation refuses it,
      as `invalid_arguments` in the run's result.)
    - `seed`: another seed gives other (still deterministic) arguments.
    - `final_text`: the final answer; default: JSON `{tool_name: tool message content}`.

    After a run, `calls` holds the `(tool_name, arguments)` pairs it sent, in order.
    """

    __test__ = False  # pytest: not a test class, despite the name

    def __init__(
        self,
        *,
        call_tools: Sequence[str] | str = "all",
        arguments: dict[str, dict[str, Any]] | None = None,
        seed: int = 0,
        final_text: str | None = None,
    ) -> None:
        if isinstance(call_tools, str) and call_tools != "all":
            raise ConfigurationError(f"call_tools must be 'all' or a list of tool names, got {call_tools!r}")
        self.call_tools = call_tools
        self.arguments = dict(arguments or {})
        self.seed = seed
        self.final_text = final_text
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._generated: dict[str, dict[str, Any]] = {}  # schema JSON -> arguments (generation is slow-ish)
        self._offered: set[str] = set()  # every tool name any request offered: `arguments` keys are checked

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        messages = request.messages
        available = {d["function"]["name"]: d["function"] for d in request.tools}
        self._offered.update(available)
        if _answered_since_last_user(messages):
            self._check_arguments()
            return _turn(messages, self.final_text if self.final_text is not None else _summary(messages))
        names = list(available) if self.call_tools == "all" else list(self.call_tools)
        missing = [n for n in names if n not in available]
        if missing:
            raise ConfigurationError(
                f"TestModel(call_tools=...) names tools the agent does not have: {', '.join(missing)}. "
                f"Available: {', '.join(available) or '(none)'}."
            )
        if request.tool_choice == "none" or not names:
            self._check_arguments()
            return _turn(messages, self.final_text if self.final_text is not None else "{}")
        calls = [(name, self._arguments_for(name, available[name].get("parameters") or {})) for name in names]
        self.calls.extend(calls)
        return _turn(messages, None, calls)

    def _check_arguments(self) -> None:
        """At a final answer: every `arguments` key must be a tool some request offered (see the class)."""
        unknown = sorted(set(self.arguments) - self._offered)
        if unknown:
            raise ConfigurationError(
                f"TestModel(arguments=...) names tools it was never offered: {', '.join(map(repr, unknown))}. "
                f"Offered: {', '.join(sorted(self._offered)) or '(none)'}. Check the spelling: a name no "
                "tool has would leave the tool it meant on generated arguments."
            )

    def _arguments_for(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if name in self.arguments:
            return copy.deepcopy(self.arguments[name])
        key = json.dumps(schema, sort_keys=True)
        if key not in self._generated:
            self._generated[key] = generate_arguments(schema, seed=self.seed)
        return copy.deepcopy(self._generated[key])


def _answered_since_last_user(messages: list[dict[str, Any]]) -> bool:
    """True when tool results came back after the last user message: time for the final answer."""
    for m in reversed(messages):
        role = m.get("role")
        if role == "tool":
            return True
        if role == "user":
            return False
    return False


def _summary(messages: list[dict[str, Any]]) -> str:
    """JSON `{tool_name: content}` of the tool results after the last user message."""
    names: dict[str, str] = {}
    results: dict[str, Any] = {}
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1) + 1
    for m in messages[start:]:
        for c in m.get("tool_calls") or ():
            names[c["id"]] = c["function"]["name"]
        if m.get("role") == "tool":
            name = names.get(m.get("tool_call_id", ""), m.get("tool_call_id", "?"))
            content = m.get("content")
            if name in results:  # the same tool more than once: keep every result
                previous = results[name]
                results[name] = [*previous, content] if isinstance(previous, list) else [previous, content]
            else:
                results[name] = content
    return json.dumps(results, ensure_ascii=False, sort_keys=False)


# --- FunctionModel -----------------------------------------------------------------------------------


class FunctionModel:
    """A `Model` whose every answer is `fn(messages, tools)` (sync or async).

    `fn` gets a copy of the conversation (OpenAI chat dicts) and the `tools` array, and returns:
    a `str` (final answer), a list of tool calls (`call(name, args)`, `(name, args)` tuples or
    `{"name": ..., "arguments": ...}` dicts), a `Reply` (`text(...)`, `tool_calls(...)`,
    `error(...)`), or a `ModelTurn`.

    ```python
    def script(messages, tools):
        if messages[-1]["role"] == "user":
            return [call("get_weather", {"city": "Lisbon"})]
        return "Sunny in Lisbon."
    ```
    `requests` keeps each `ModelRequest` it answered.
    """

    def __init__(self, fn: ModelFunction) -> None:
        if not callable(fn):
            raise ConfigurationError(f"FunctionModel needs a callable fn(messages, tools), got {fn!r}")
        self.fn = fn
        self.requests: list[ModelRequest] = []
        self._ids = itertools.count(1)

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        self.requests.append(request)
        messages = [dict(m) for m in request.messages]  # the run's own list must not be mutated by fn
        answer = self.fn(messages, list(request.tools))
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, ModelTurn):
            return answer
        if isinstance(answer, Reply):
            from agentloop.testing._scripted import ScriptedModel

            return await ScriptedModel([answer]).request(request)
        if isinstance(answer, str):
            return _turn(request.messages, answer)
        if isinstance(answer, (list, tuple)) and answer:
            return _turn(request.messages, None, [_call_spec(c) for c in answer])
        raise ConfigurationError(
            f"FunctionModel: fn returned {answer!r}; return a str (final answer), a non-empty list of tool "
            "calls (call(name, args), (name, args) or {'name': ..., 'arguments': ...}), a Reply or a ModelTurn."
        )


def _call_spec(c: Any) -> tuple[str, Any]:
    if isinstance(c, ScriptedCall):
        return c.name, c.arguments if c.arguments is not None else {}
    if isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str):
        return c[0], c[1]
    if isinstance(c, dict) and isinstance(c.get("name"), str):
        return c["name"], c.get("arguments") or {}
    raise ConfigurationError(
        f"FunctionModel: {c!r} is not a tool call; use call(name, args), (name, args) or "
        "{'name': ..., 'arguments': {...}}."
    )
