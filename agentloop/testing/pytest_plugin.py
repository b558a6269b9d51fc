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


_FIXTURES = ("fake_router", "flux_client")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test using these fixtures without anyio's plugin (e.g. `@pytest.mark.asyncio` of
    pytest-asyncio) failed with pytest's "requested an async fixture ... with no plugin" or, in
    pytest-asyncio's auto mode, passed and then errored in teardown ("Attempted to exit cancel scope
    in a different task"): it sets a fixture up and tears it down in different tasks, and the fake
    router's task group must end in the task that started it. Say so, and the fix, before setup."""
    names = getattr(item, "fixturenames", ())
    used = [name for name in _FIXTURES if name in names]
    if used and "anyio_backend" not in names:
        pytest.fail(
            f"{item.name} uses agentloop's {' and '.join(used)}, which are anyio fixtures: mark the test "
            "@pytest.mark.anyio (it runs on asyncio by default; trio too with an anyio_backend fixture). "
            "pytest-asyncio's @pytest.mark.asyncio cannot run them: it tears an async fixture down in "
            "another task than the one that set it up.",
            pytrace=False,
        )
    # marked by pytest-asyncio as well (its asyncio_mode = auto marks every async test)
    if used and item.get_closest_marker("asyncio") is not None:
        pytest.fail(
            f"{item.name} is run by both anyio's and pytest-asyncio's plugins (marked asyncio, e.g. by "
            "asyncio_mode = auto): the fixtures would serve one event loop and the test run in another, so "
            "every request would hang until its timeout. Set asyncio_mode = strict and keep @pytest.mark.anyio "
            "on these tests.",
            pytrace=False,
        )


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
