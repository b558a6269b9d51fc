"""Shared fixtures: every async test runs on both anyio backends (asyncio and trio)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentloop.testing import FakeFluxRouter


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    """A fresh fake FluxRouter on loopback with the default script (files needing a key or a handler
    define their own `router`, which overrides this one)."""
    async with FakeFluxRouter() as r:
        yield r
