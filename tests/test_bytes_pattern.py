"""A `bytes` parameter's schema says exactly which texts its binder takes: standard base64 with its
padding, as a `pattern` RE2 (the validator's engine) runs.

Before: the schema had no pattern, so a schema-valid argument (TestModel's, or any generator's)
was refused by the binder, and `base64.b64decode(validate=True)` took texts no encoder writes
("QUJD=", "QUJD===": padding after a whole quantum) on Python 3.11 and refused them on others.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import pytest
import re2
from helpers import examples, registry_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentloop import Agent, ToolRegistry, run_tool_call
from agentloop._schema.leaves import OWN_PATTERNS, to_bytes  # internal unit under test: binder, re regex
from agentloop.testing import TestModel

SETTINGS = settings(
    max_examples=examples(50), deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def bytes_pattern() -> str:
    tools = ToolRegistry()

    def f(x: bytes, y: bytearray) -> str:
        return "ok"

    tools.register(f)
    (definition,) = tools.definitions
    props = definition["function"]["parameters"]["properties"]
    assert props["x"]["pattern"] == props["y"]["pattern"]
    return str(props["x"]["pattern"])


PATTERN = bytes_pattern()
REGEX = re2.compile(PATTERN)


def binder_accepts(text: str) -> bool:
    try:
        to_bytes(text)
    except ValueError:
        return False
    return True


# Texts near the edges: every length mod 4, padding in and out of place, the characters around
# the alphabet (URL-safe base64, whitespace, newlines, non-ASCII).
NEAR = st.text(st.sampled_from("AQgwz09+/=-_ \n\r\té"), max_size=14)


def damaged(data: bytes, draw: Any) -> str:
    text = base64.b64encode(data).decode()
    how = draw(st.sampled_from(["as is", "strip =", "add =", "newline", "space", "urlsafe", "cut"]))
    if how == "strip =":
        return text.rstrip("=")
    if how == "add =":
        return text + "=" * draw(st.integers(1, 3))
    if how in ("newline", "space"):
        at = draw(st.integers(0, len(text)))
        return text[:at] + ("\n" if how == "newline" else " ") + text[at:]
    if how == "urlsafe":
        return base64.urlsafe_b64encode(data).decode()
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    return text


@st.composite
def texts(draw: Any) -> str:
    if draw(st.booleans()):
        return draw(NEAR)
    return damaged(draw(st.binary(max_size=20)), draw)


@SETTINGS
@given(text=texts())
@example(text="")
@example(text="QUJD=")  # padding after a whole quantum: b64decode(validate=True) took it on 3.11
@example(text="QUJD===")
@example(text="QUJD\n")  # a trailing newline: `$` in Python's re would take it, RE2's does not
@example(text="=")
@example(text="QQ")
@example(text="QQ=")
@example(text="QQ===")
@example(text="QUI==")
@example(text="QUJDQ")
def test_the_pattern_matches_exactly_what_the_binder_takes(text: str) -> None:
    assert (REGEX.search(text) is not None) == binder_accepts(text), text
    # without google-re2 the validator searches with this Python `re` regex instead (`\Z`: `$`
    # took "QUJD\n"); see tests/test_without_re2.py
    assert (OWN_PATTERNS[PATTERN].search(text) is not None) == binder_accepts(text), text


@SETTINGS
@given(data=st.binary(max_size=300))
def test_base64_of_any_bytes_matches_and_binds_to_those_bytes(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert REGEX.search(text) is not None
    assert to_bytes(text) == data


@settings(max_examples=examples(15), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=texts(), backend=st.sampled_from(["asyncio", "trio"]))
def test_a_call_is_run_exactly_when_the_pattern_matches(text: str, backend: str) -> None:
    """Through the public API: the validator (RE2, the pattern) and the binder never disagree, so
    the tool runs, with the decoded bytes, exactly for the texts the schema allows."""
    got: list[Any] = []
    tools = registry_for(bytes, got)

    async def main() -> Any:
        return await run_tool_call(tools, "f", json.dumps({"x": text}))

    record = anyio.run(main, backend=backend)
    if REGEX.search(text) is not None:
        assert record.status == "ok", record.content
        assert got == [base64.b64decode(text)]
    else:
        assert record.status == "invalid_arguments" and got == []


@pytest.mark.anyio
async def test_test_model_sends_bytes_the_tool_takes() -> None:
    """TestModel draws arguments from the schema: with the pattern, a valid base64 text (before,
    seed 1 sent `{"blob": "\x8c"}`, refused by the binder as `invalid_arguments`)."""
    tools = ToolRegistry()
    seen: list[bytes] = []

    @tools.tool
    def store(blob: bytes, name: str) -> int:
        seen.append(blob)
        return len(blob)

    for seed in range(1, 4):
        result = await Agent(client=TestModel(seed=seed), tools=tools).run("go")
        assert [r.status for r in result.tool_calls] == ["ok"], result.tool_calls
    assert len(seen) == 3 and all(isinstance(b, bytes) for b in seen)
