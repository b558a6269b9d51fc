"""A Decimal parameter's schema says exactly which strings it takes: every argument the schema
accepts converts, so `TestModel` (which generates from the schema) never sends one the tool refuses.

Regression: the schema was `{"type": ["number", "string"], "format": "decimal"}`; "decimal" is no
format a validator checks, so "" and "abc" were schema-valid and `TestModel(seed=0)` sent "" for
a Decimal parameter, which the tool's converter refused (status "invalid_arguments").
"""

from __future__ import annotations

import decimal
import re
from typing import Any

import anyio
import jsonschema
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from agentloop import ToolRegistry, run_tool_call
from agentloop.testing import TestModel


def registry() -> tuple[ToolRegistry, dict[str, Any]]:
    tools = ToolRegistry()

    @tools.tool
    def price(amount: decimal.Decimal) -> str:
        """Echo a decimal."""
        return str(amount)

    return tools, tools.definitions[0]["function"]["parameters"]


TOOLS, PARAMETERS = registry()
FIELD = PARAMETERS["properties"]["amount"]
VALID = jsonschema.Draft202012Validator(FIELD)


def converted(value: Any) -> Any:
    record = anyio.run(run_tool_call, TOOLS, "price", {"amount": value})
    return record


def test_the_schema_names_the_strings_it_takes() -> None:
    assert FIELD["type"] == ["number", "string"] and FIELD["format"] == "decimal"
    assert not VALID.is_valid("") and not VALID.is_valid("abc") and not VALID.is_valid("NaN")
    assert VALID.is_valid("12.50") and VALID.is_valid(" -1.5e3 ") and VALID.is_valid(3)


@pytest.mark.parametrize("seed", range(8))  # 7: a "\u3000"-padded number (Python `\s`, not RE2's)
def test_testmodel_sends_a_decimal_the_tool_takes(seed: int) -> None:
    from agentloop import Agent

    result = anyio.run(Agent(client=TestModel(seed=seed), tools=TOOLS).run, "go")
    assert [c.status for c in result.tool_calls] == ["ok"], result.tool_calls


@pytest.mark.parametrize("padded", ["\u3000 1.5", "1.5\x85", "\x1e1", "\v1", "\f1"])
def test_whitespace_the_validator_refuses_the_schema_refuses_too(padded: str) -> None:
    # The schema's pattern means the same to Python's re (schema generators: TestModel) and to
    # RE2 (the validator): it named `\s`, Unicode whitespace to one and ASCII to the other.
    assert not re.search(FIELD["pattern"], padded)
    assert converted(padded).status == "invalid_arguments"


_NEAR = st.one_of(
    st.from_regex(FIELD["pattern"]),  # what the schema's own pattern admits, at its edges
    st.text(alphabet="0123456789+-.eE \t\n_٣", max_size=12),  # near misses
    st.from_regex(r"[0-9]{3290,3310}(\.[0-9])?(e[+-]?[0-9]{1,4})?", fullmatch=True),  # the length bound
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    from_schema(FIELD),
)


# The smoke size (it was 300, ~6 s of CPU under load); `--hypothesis-profile=fuzz` draws 2,000.
@settings(max_examples=examples(100), deadline=None, suppress_health_check=list(HealthCheck))
@given(value=_NEAR)
def test_every_argument_the_schema_accepts_converts(value: Any) -> None:
    record = converted(value)
    if VALID.is_valid(value):
        assert record.status == "ok", (value, record.content)
        assert decimal.Decimal(record.content) == decimal.Decimal(
            value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else value
        )
    elif isinstance(value, str) and not re.search(FIELD["pattern"], value):
        # the schema refuses it: the model is told, and the tool never runs with it
        assert record.status == "invalid_arguments", (value, record.status)
