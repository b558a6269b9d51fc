"""Shared fixtures: every async test runs on both anyio backends (asyncio and trio).

Hypothesis profiles: "suite" (the default) runs each property test at the count it states, its
smoke size for the suite's time budget, with no per-example deadline (a busy machine is slow, not
wrong). `pytest --hypothesis-profile=fuzz` is the long run: the counts written `examples(n)`
(tests/helpers.py) are multiplied by 20, the tests stating no count run 2,000 examples.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from agentloop.testing import FakeFluxRouter

settings.register_profile("suite", deadline=None)
settings.register_profile("fuzz", deadline=None, max_examples=2000)
settings.load_profile("suite")  # `--hypothesis-profile=fuzz` loads the other one after this file


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    """A fresh fake FluxRouter on loopback with the default script (files needing a key or a handler
    define their own `router`, which overrides this one)."""
    async with FakeFluxRouter() as r:
        yield r
