"""A whole OpenAI answer whose `tool_calls` is neither a list nor one call is a malformed answer.

Found from outside: `"tool_calls": "x"` was dropped, and the run ended "final" with an empty
answer, the model's calls lost without a word.
"""

from __future__ import annotations

import pytest

from agentloop import Agent, APIResponseError, FluxClient, RetryPolicy
from agentloop.testing import FakeFluxRouter, raw

pytestmark = pytest.mark.anyio


def _answer(calls: str) -> bytes:
    return (
        b'{"choices": [{"message": {"role": "assistant", "tool_calls": ' + calls.encode() + b"}, "
        b'"finish_reason": "tool_calls"}]}'
    )


@pytest.mark.parametrize("calls", ['"x"', "7", "true"])
async def test_tool_calls_of_the_wrong_shape_are_a_malformed_answer(calls: str) -> None:
    async with FakeFluxRouter([raw(200, _answer(calls))]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=RetryPolicy(max_retries=0)) as c:
            with pytest.raises(APIResponseError, match="`tool_calls` as a JSON"):
                await Agent(client=c, tools=[]).run("go")


async def test_empty_tool_calls_are_still_an_answer_without_calls() -> None:
    body = b'{"choices": [{"message": {"role": "assistant", "content": "hi", "tool_calls": []}}]}'
    async with FakeFluxRouter([raw(200, body)]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as c:
            result = await Agent(client=c, tools=[]).run("go")
    assert result.output == "hi"
