"""Without google-re2 (a platform with no wheel for it, e.g. PyPy, where pyproject does not ask
for it): the most ordinary signatures still register, and nothing is checked with a backtracking
regex.

Before: a `bytes` parameter's schema carries a base64 `pattern`, a `Decimal` parameter's a
numeric one, and without RE2 every pattern was refused at registration, so `def store(blob:
bytes)` and `def pay(amount: Decimal)` raised ToolDefinitionError. Now
agentloop's own patterns are checked with a Python `re` regex for the same texts that runs in
linear time (`agentloop._schema.leaves.OWN_PATTERNS`); a tool author's pattern is still refused
there, with the fix named.

The import of `re2` is made to fail for the test only (`sys.modules["re2"] = None`); agentloop
imports it when it compiles a schema's pattern, i.e. at registration.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from decimal import Decimal

import pytest
import re2
from helpers import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentloop import Agent, FluxClient, ToolDefinitionError, ToolRegistry
from agentloop._schema.leaves import DECIMAL_SCHEMA, OWN_PATTERNS  # internal unit under test
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_re2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "re2", None)  # `import re2` raises ImportError


def bytes_tools(got: list[object]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def store(blob: bytes, name: str, extra: bytearray | None = None) -> int:
        """Store a blob."""
        got.append(blob)
        return len(blob)

    return tools


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_bytes_parameter_registers_and_binds_without_re2(no_re2: None, wire: str) -> None:
    got: list[object] = []
    tools = bytes_tools(got)  # raised ToolDefinitionError ("google-re2 ... is not installed")
    (definition,) = tools.definitions
    assert "pattern" in definition["function"]["parameters"]["properties"]["blob"]
    sent = ["QUJD", "QUJD\n", "QUJD=", "QQ", "", "QUI="]
    replies = [tool_calls(*(call("store", {"blob": s, "name": "n"}) for s in sent)), text("done")]
    async with FakeFluxRouter(replies) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="k") as client:
            result = await Agent(client=client, tools=tools).run("go")
    assert [c.status for c in result.tool_calls] == ["ok", *["invalid_arguments"] * 3, "ok", "ok"]
    assert sorted(got) == [b"", b"AB", b"ABC"]  # (the calls run concurrently)
    # "QUJD\n": Python's `$` matches before a final newline; the schema check (`\Z`) refuses it
    # itself, not only the binder after it
    assert "does not match" in result.tool_calls[1].content, result.tool_calls[1].content


async def test_a_bytes_field_of_a_structured_output_works_without_re2(no_re2: None) -> None:
    @dataclass
    class Blob:
        data: bytes

    encoded = base64.b64encode(b"\x00\xffhello").decode()
    async with FakeFluxRouter([text('{"data": "QUJD\\n"}'), text(f'{{"data": "{encoded}"}}')]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            result = await Agent[None, Blob](client=client, output_type=Blob).run("go")
    assert result.output == Blob(b"\x00\xffhello")
    assert len(router.model_requests) == 2  # the first answer was refused and fed back


async def test_a_decimal_parameter_registers_and_binds_without_re2(no_re2: None) -> None:
    tools = ToolRegistry()
    got: list[Decimal] = []

    @tools.tool  # raised ToolDefinitionError ("google-re2 ... is not installed")
    def pay(amount: Decimal) -> str:
        """Pay an amount."""
        got.append(amount)
        return "paid"

    sent: list[object] = [" 12.50 ", "-1.5e3", 3, "1.5\n", "12.50\nx", "", "1e1234", "١٢"]
    model = ScriptedModel([tool_calls(*(call("pay", {"amount": a}) for a in sent)), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [c.status for c in result.tool_calls] == ["ok"] * 4 + ["invalid_arguments"] * 4
    assert sorted(got) == [Decimal("-1500"), Decimal("1.5"), Decimal("3"), Decimal("12.50")]


# Texts at the edges of the Decimal pattern: what it admits, and near misses (a trailing newline,
# Unicode digits and spaces, long exponents, doubled signs and points)
DECIMAL_NEAR = st.one_of(
    st.from_regex(DECIMAL_SCHEMA["pattern"]),
    st.text(alphabet="0123456789+-.eE \t\n\r\v_٣\u3000x", max_size=14),
)


@settings(max_examples=examples(100), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=DECIMAL_NEAR)
@example(value="1\n")  # `$` in Python's re takes a final newline; the schema's ws class too
@example(value="1.5\n\n")
@example(value="1e1234")
@example(value="+.5")
@example(value="5.")
@example(value=".")
def test_the_decimal_regex_without_re2_matches_what_re2_matches(value: str) -> None:
    pattern = DECIMAL_SCHEMA["pattern"]
    assert (OWN_PATTERNS[pattern].search(value) is not None) == (re2.search(pattern, value) is not None)


def test_a_tool_authors_pattern_is_still_refused_without_re2_with_the_fix_named(no_re2: None) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match=r"google-re2 .* is not installed.*pip install google-re2"):
        tools.register(lambda s: s, name="t", parameters=schema)
    assert "t" not in tools
