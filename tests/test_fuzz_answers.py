"""Fuzzing model answers on both wires: every drawn answer, played to a real run over the fake
router, ends in a final answer (tool errors fed back included) or a typed AgentloopError, with
bounded error texts and RSS, on asyncio and trio. A few examples here; ~10,000 in
`benchmarks/fuzz.py` (same strategies: tests/hostile_answers.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from helpers import examples
from hostile_answers import AnswerServer, anthropic_body, fuzz_tools, openai_body, rss_mb, run_one
from hypothesis import HealthCheck, given, settings

from agentloop import FluxClient, RetryPolicy
from agentloop.testing import FakeFluxRouter

SETTINGS = settings(
    max_examples=examples(12), deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def harness(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A running event loop (in a portal) with the router, both wires' clients and the tools."""
    with ExitStack() as stack:
        portal = stack.enter_context(start_blocking_portal(request.param))
        server = AnswerServer()
        router = stack.enter_context(portal.wrap_async_context_manager(FakeFluxRouter(server.handler)))
        server.router = router
        opts = {"api_key": "k", "stream": False, "retry": RetryPolicy(max_retries=0)}
        openai = stack.enter_context(
            portal.wrap_async_context_manager(FluxClient(base_url=router.base_url, **opts))
        )
        anthropic = stack.enter_context(
            portal.wrap_async_context_manager(FluxClient(base_url=router.anthropic_url, **opts))
        )
        yield {
            "portal": portal,
            "server": server,
            "openai": openai,
            "anthropic": anthropic,
            "tools": fuzz_tools(),
        }


def play(h: dict[str, Any], wire: str, body: bytes) -> None:
    outcome = h["portal"].call(run_one, h[wire], h["server"], body, h["tools"])
    assert outcome.startswith("final") or outcome.endswith(("Error", "Exceeded", "Detected")), outcome


@SETTINGS
@given(body=openai_body())
def test_openai_wire_answers(harness: dict[str, Any], body: bytes) -> None:
    play(harness, "openai", body)


@SETTINGS
@given(body=anthropic_body())
def test_anthropic_wire_answers(harness: dict[str, Any], body: bytes) -> None:
    play(harness, "anthropic", body)


def test_rss_stays_bounded_over_many_hostile_answers(harness: dict[str, Any]) -> None:
    bad = json.dumps({"xs": ["s"] * 100_000})
    calls = [{"id": f"c{i}", "function": {"name": "takes_ints", "arguments": bad}} for i in range(3)]
    body = json.dumps({"choices": [{"message": {"role": "assistant", "tool_calls": calls}}]}).encode()
    play(harness, "openai", body)  # warm: allocator pools, first-use caches
    before = rss_mb()
    for _ in range(10):
        play(harness, "openai", body)
    assert rss_mb() - before < 100, "RSS grew by more than 100 MB over 10 runs of the same answer"
