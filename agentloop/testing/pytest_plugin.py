"""pytest plugin (entry point `agentloop`): `fake_router` and `flux_client` fixtures.

Both are async fixtures for anyio's pytest plugin: mark tests with `pytest.mark.anyio`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from agentloop.testing._server import FakeFluxRouter

if TYPE_CHECKING:  # imported by the fixture: a pytest session that never uses it loads no httpx
    from agentloop import FluxClient


@pytest.fixture
async def fake_router() -> AsyncIterator[FakeFluxRouter]:
    """A started `FakeFluxRouter` with an empty script: `fake_router.add(text("hi"))`."""
    async with FakeFluxRouter() as router:
        yield router


@pytest.fixture
async def flux_client(fake_router: FakeFluxRouter) -> AsyncIterator[FluxClient]:
    """A `FluxClient` pointed at `fake_router` (API key "test", retries without waiting)."""
    from agentloop import FluxClient, RetryPolicy

    async with FluxClient(
        base_url=fake_router.base_url, api_key="test", retry=RetryPolicy(initial_delay=0.001, max_delay=0.01)
    ) as client:
        yield client
