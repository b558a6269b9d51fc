"""Generated tool signatures register, validate and run end to end (property-based, issue #13).

For each signature drawn from the supported type grammar (tests/signature_grammar.py):
`register()` succeeds or raises ToolDefinitionError, never anything else; the schema passes
`check_schema`; arguments generated from the schema by hypothesis-jsonschema run through a full
`Agent.run` against the fake router (real HTTP) and reach the tool converted to the annotated
types; arguments that violate the schema are fed back to the model as `invalid_arguments`; the
fast acceptance check agrees with jsonschema. The long run is benchmarks/fuzz_signatures.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator
from signature_grammar import FORMATS, Signature, conforms, invalid_arguments, signatures, to_draft7

from agentloop import Agent, FluxClient, ToolDefinitionError, ToolRegistry
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

EXAMPLES = 12  # per backend; the suite's time matters (the long run is in benchmarks/)


def check_fast_path(tool: Any, validator: Draft202012Validator, args: Any) -> None:
    if not isinstance(args, dict):
        return
    valid = validator.is_valid(args)
    if tool.fast_check is not None and tool.fast_check(args):
        assert valid, f"fast check accepted what jsonschema rejects: {args!r}"
    assert (tool.validation_errors(args) == []) == valid, args


async def exercise(sig: Signature, data: Any, router: FakeFluxRouter, client: FluxClient) -> str:
    """One signature through register and a full run; returns what happened (for the fuzz report)."""
    fn = sig.build()
    tools = ToolRegistry()
    try:
        tool = tools.register(fn)
    except ToolDefinitionError:
        return "definition_error"  # refused with the documented error: allowed
    schema = tool.parameters
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    good = data.draw(from_schema(to_draft7(schema), custom_formats=FORMATS), label="valid arguments")
    assert validator.is_valid(good), good
    bad = data.draw(invalid_arguments(schema, good), label="invalid arguments")
    bad_is_valid = isinstance(bad, dict) and validator.is_valid(bad)
    check_fast_path(tool, validator, good)
    check_fast_path(tool, validator, bad)

    router.add(tool_calls(call("tool_fn", good), call("tool_fn", bad)), text("done"))
    result = await Agent(client=client, tools=tools).run("go")
    assert result.output == "done"
    ok, rejected = result.tool_calls
    assert ok.status == "ok", ok.content
    if bad_is_valid:  # valid for the schema; a converter may still refuse a string ("s" as a date)
        assert rejected.status == "ok" or rejected.error == "conversion", rejected.content
    else:
        assert rejected.status == "invalid_arguments", rejected.content
    if rejected.status != "ok":
        assert rejected.content.startswith("Invalid arguments for tool 'tool_fn'")
    assert len(sig.received) == 1 + (rejected.status == "ok")
    got = sig.received[0]
    for name, tp, _default in sig.params:
        assert conforms(got[name], tp), (name, tp, got[name])
    return "ran"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sig=signatures(), data=st.data())
def test_generated_signatures_register_and_run(backend: str, sig: Signature, data: Any) -> None:
    # Each example gets its own event loop, router and client: hypothesis drives sync tests only.
    async def main() -> None:
        async with FakeFluxRouter() as router, FluxClient(base_url=router.base_url, api_key="test") as client:
            await exercise(sig, data, router, client)

    anyio.run(main, backend=backend)
