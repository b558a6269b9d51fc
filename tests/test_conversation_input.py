"""The caller's conversation (`run(messages=...)`) is checked before any request, on both wires.

A message whose content is missing or of a kind its role does not take, an unknown role, a
message that is not a dict, a tool message with no tool_call_id, an assistant tool call without
its id / name / arguments text: each is a `ConversationError` naming the message (and part) and
what to send, raised before the router sees anything. Before, a user message with no content or
with content `5` went out as it was, and the provider's 400 named nothing of the caller's.

The property: whatever the conversation, the run either sends a request the wire's format
accepts (checked against a strict schema of each wire, below) or raises `ConversationError`
having sent nothing; never another exception.
"""

from __future__ import annotations

from typing import Any

import anyio
import jsonschema
import pytest
from helpers import examples
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentloop import Agent, ConversationError, FluxClient
from agentloop.testing import FakeFluxRouter, text

pytestmark = pytest.mark.anyio

WIRES = ("openai", "anthropic")


async def outcome(conversation: Any, wire: str) -> tuple[BaseException | None, list[Any]]:
    """Run `conversation` (then the prompt "go") over `wire`; (the exception, the request bodies)."""
    router = FakeFluxRouter(lambda _: text("ok"))
    async with router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="k") as client:
            agent = Agent(client=client, model="m")
            try:
                await agent.run("go", messages=conversation)
            except Exception as e:
                return e, [r.json for r in router.model_requests]
    return None, [r.json for r in router.model_requests]


# --- the exact repros -------------------------------------------------------------------------

USER_OK = {"role": "user", "content": "hi"}

REFUSED = [
    # (conversation, what the message must name)
    ([{"role": "user"}], r"messages\[0\] \(role 'user'\) has no content; send a str"),
    ([{"role": "user", "content": 5}], r"messages\[0\] \(role 'user'\) has content 5 \(int\)"),
    ([{"role": "user", "content": None}], r"messages\[0\] .* content None"),
    ([{"role": "user", "content": {"text": "hi"}}], r"messages\[0\] .* a dict of 1.*'type': 'text'"),
    ([{"role": "user", "content": []}], r"messages\[0\] .* non-empty list of content parts"),
    ([{"role": "user", "content": ["hi"]}], r"messages\[0\] \(role 'user'\) content\[0\] is 'hi' \(str\)"),
    ([{"role": "user", "content": [{"type": "text"}]}], r"content\[0\] of type 'text' has no valid 'text'"),
    (
        [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}],
        r"content\[0\] of type 'image_url' has no valid 'image_url'; send .*'url'",
    ),
    ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], r"a part of type 'video'"),
    (
        [USER_OK, {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
        r"messages\[1\]",
    ),
    ([USER_OK, {"role": "assistant", "content": 3}], r"messages\[1\] \(role 'assistant'\) has content 3"),
    ([{"role": "robot", "content": "x"}], r"messages\[0\] has role 'robot'; expected one of"),
    (["hi"], r"messages\[0\] must be a dict, got str"),
    (
        [USER_OK, {"role": "tool", "content": "r"}],
        r"messages\[1\] is a tool message without a string tool_call_id",
    ),
    (
        [USER_OK, {"role": "tool", "tool_call_id": "c", "content": 1.5}],
        r"messages\[1\] \(role 'tool'\) has content",
    ),
    (
        [
            USER_OK,
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
        ],
        r"messages\[1\]\['tool_calls'\]\[0\] is not a tool call .*json.dumps",
    ),
    (
        [USER_OK, {"role": "assistant", "tool_calls": [{"id": "c", "function": "f"}]}],
        r"messages\[1\]\['tool_calls'\]\[0\]",
    ),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("conversation", "named"), REFUSED)
async def test_a_malformed_message_is_refused_by_name_before_any_request(
    conversation: list[Any], named: str, wire: str
) -> None:
    error, sent = await outcome(conversation, wire)
    assert isinstance(error, ConversationError), error
    assert sent == []
    import re

    assert re.search(named, str(error)), str(error)


ACCEPTED = [
    [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
    [{"role": "system", "content": [{"type": "text", "text": "be brief"}]}, USER_OK],
    [USER_OK, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "r"}]}],
    [USER_OK, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
]  # fmt: skip


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("conversation", ACCEPTED)
async def test_well_formed_conversations_still_go_out(conversation: list[Any], wire: str) -> None:
    error, sent = await outcome(conversation, wire)
    assert error is None
    assert len(sent) == 1
    assert_valid_on_the_wire(sent[0], wire)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("calls", [None, []])
async def test_an_assistant_message_with_no_calls_goes_out_without_the_key(calls: Any, wire: str) -> None:
    # Found by the property below: {"role": "assistant", "tool_calls": None} (what an SDK's
    # message.model_dump() gives) went out as `"tool_calls": null`, which OpenAI refuses, as it
    # does an empty list. The caller's dict is left as it was.
    message = {"role": "assistant", "content": "earlier answer", "tool_calls": calls}
    error, sent = await outcome([USER_OK, message], wire)
    assert error is None and len(sent) == 1
    assert_valid_on_the_wire(sent[0], wire)
    if wire == "openai":
        assert sent[0]["messages"][1] == {"role": "assistant", "content": "earlier answer"}
    assert message["tool_calls"] == calls


async def test_a_part_the_anthropic_wire_cannot_carry_is_refused_not_dropped() -> None:
    # An audio part went nowhere on the Anthropic wire: the model answered a message it never saw.
    conversation = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}],
        }
    ]
    error, sent = await outcome(conversation, "anthropic")
    assert isinstance(error, ConversationError)
    assert "messages[0] content[0]" in str(error) and "input_audio" in str(error) and sent == []
    error, sent = await outcome(conversation, "openai")
    assert error is None and len(sent) == 1


# --- what each wire's format accepts (strict: what the providers document) -----------------------

_STR = {"type": "string"}
_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": _STR},
}
_OPENAI_PART = {
    "oneOf": [
        _TEXT_PART,
        {"type": "object", "required": ["type", "image_url"], "properties": {"type": {"const": "image_url"},
         "image_url": {"type": "object", "required": ["url"], "properties": {"url": _STR}}}},
        {"type": "object", "required": ["type", "input_audio"], "properties": {"type": {"const": "input_audio"}, "input_audio": {"type": "object"}}},
        {"type": "object", "required": ["type", "file"], "properties": {"type": {"const": "file"}, "file": {"type": "object"}}},
        {"type": "object", "required": ["type", "refusal"], "properties": {"type": {"const": "refusal"}, "refusal": _STR}},
    ]
}  # fmt: skip
_CONTENT = {"anyOf": [_STR, {"type": "array", "minItems": 1, "items": _OPENAI_PART}]}
_CALL = {
    "type": "object",
    "required": ["id", "function"],
    "properties": {
        "id": _STR,
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": {"type": "string", "minLength": 1}, "arguments": _STR}},
    },
}  # fmt: skip
_OPENAI_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}},
    "allOf": [
        {"if": {"properties": {"role": {"const": "assistant"}}},
         "then": {"properties": {"content": {"anyOf": [{"type": "null"}, _CONTENT]},
                                 "tool_calls": {"type": "array", "minItems": 1, "items": _CALL}}},
         "else": {"required": ["content"], "properties": {"content": _CONTENT}}},
        {"if": {"properties": {"role": {"const": "tool"}}}, "then": {"required": ["tool_call_id"],
         "properties": {"tool_call_id": _STR}}},
    ],
}  # fmt: skip
_ANTHROPIC_BLOCK = {
    "oneOf": [  # text blocks must be non-empty (Anthropic's 400), in assistant turns too
        {**_TEXT_PART, "properties": {"type": {"const": "text"}, "text": {"type": "string", "minLength": 1}}},
        {"type": "object", "required": ["type", "source"], "properties": {"type": {"const": "image"}, "source": {"type": "object"}}},
        {"type": "object", "required": ["type", "id", "name", "input"], "properties": {"type": {"const": "tool_use"},
         "id": _STR, "name": {"type": "string", "minLength": 1}, "input": {"type": "object"}}},
        {"type": "object", "required": ["type", "tool_use_id", "content"], "properties": {"type": {"const": "tool_result"},
         "tool_use_id": _STR, "content": _STR}},
    ]
}  # fmt: skip
SCHEMAS = {
    "openai": {"type": "object", "required": ["messages"], "properties": {"messages": {"type": "array", "items": _OPENAI_MESSAGE}}},
    "anthropic": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "system": _STR,
            "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"],
                         "properties": {"role": {"enum": ["user", "assistant"]},
                                        "content": {"type": "array", "items": _ANTHROPIC_BLOCK}}}},
        },
    },
}  # fmt: skip

# One validator per wire, its schema checked once: jsonschema.validate() checks the schema against
# the metaschema and builds a new validator on every call (17-50 ms, 2-6x the run it checks). Same
# verdict and error as jsonschema.validate().
VALIDATORS = {wire: jsonschema.validators.validator_for(schema)(schema) for wire, schema in SCHEMAS.items()}
for _validator in VALIDATORS.values():
    type(_validator).check_schema(_validator.schema)


def assert_valid_on_the_wire(body: Any, wire: str) -> None:
    error = jsonschema.exceptions.best_match(VALIDATORS[wire].iter_errors(body))
    if error is not None:
        raise error


# --- any conversation: accepted and valid for the wire, or a ConversationError ------------------

_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=3), max_size=2),
)  # fmt: skip


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = _ANY) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, else `bad`: most conversations are close to valid."""
    return st.integers(0, 9).flatmap(lambda k: bad if k == 0 else good)


_URL = st.fixed_dictionaries({"url": _mostly(st.just("https://x/i.png"))})
_PART = _mostly(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": _mostly(st.text(max_size=5))}),
        st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _mostly(_URL)}),
        st.fixed_dictionaries({"type": st.sampled_from(["refusal", "input_audio", "file", "video"]), "refusal": _ANY, "file": _ANY}),
    )
)  # fmt: skip
_CONTENT_ST = _mostly(st.one_of(st.text(max_size=8), st.lists(_PART, max_size=3)))
_CALL_ST = _mostly(
    st.fixed_dictionaries(
        {"id": _mostly(st.just("c1")), "type": _mostly(st.just("function"), st.just("other")),
         "function": _mostly(st.fixed_dictionaries({"name": _mostly(st.just("f")), "arguments": _mostly(st.just("{}"))}))}
    )
)  # fmt: skip


@st.composite
def _messages(draw: st.DrawFn) -> list[Any]:
    """One message; an assistant message with a call is mostly followed by its tool message."""
    if draw(st.integers(0, 15)) == 0:
        return [draw(_ANY)]
    role = draw(
        _mostly(
            st.sampled_from(["system", "developer", "user", "assistant"]),
            st.sampled_from(["tool", "robot", None]),
        )
    )
    m: dict[str, Any] = {} if role is None else {"role": role}
    if draw(st.integers(0, 9)):
        m["content"] = draw(_CONTENT_ST)
    if role == "tool" and draw(st.integers(0, 9)):
        m["tool_call_id"] = draw(_mostly(st.just("c1")))
    if role == "assistant" and draw(st.integers(0, 3)) == 0:
        m["tool_calls"] = draw(_mostly(st.lists(_CALL_ST, min_size=1, max_size=1)))
        if draw(st.integers(0, 3)):
            return [m, {"role": "tool", "tool_call_id": "c1", "content": draw(_CONTENT_ST)}]
    return [m]


def _conversation() -> st.SearchStrategy[list[Any]]:
    return st.lists(_messages(), max_size=4).map(lambda groups: [m for group in groups for m in group])


@settings(
    max_examples=examples(50),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(conversation=_conversation(), wire=st.sampled_from(WIRES))
def test_any_conversation_goes_out_valid_or_is_refused_before_any_request(
    anyio_backend: str, conversation: list[Any], wire: str
) -> None:
    error, sent = anyio.run(outcome, conversation, wire, backend=anyio_backend)
    event("accepted" if error is None else "refused")
    if error is None:
        assert len(sent) == 1
        assert_valid_on_the_wire(sent[0], wire)
    else:
        assert isinstance(error, ConversationError), repr(error)
        assert sent == []
