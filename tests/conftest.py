"""Shared fixtures: every async test runs on both anyio backends (asyncio and trio).

Hypothesis profiles: "suite" (the default) runs each property test at the count it states, its
smoke size for the suite's time budget, with no per-example deadline (a busy machine is slow, not
wrong). `pytest --hypothesis-profile=fuzz` is the long run: the counts written `examples(n)`
(tests/helpers.py) are multiplied by 20, the tests stating no count run 2,000 examples.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from agentloop.testing import FakeFluxRouter

settings.register_profile("suite", deadline=None)
settings.register_profile("fuzz", deadline=None, max_examples=2000)
settings.load_profile("suite")  # `--hypothesis-profile=fuzz` loads the other one after this file


def pytest_configure(config: pytest.Config) -> None:
    """Under PYTHONDONTWRITEBYTECODE the hundreds of Python subprocesses the suite starts (CLI runs,
    crash workers, MCP servers, doc commands) each compiled agentloop from source again: ~0.1 s of
    CPU apiece. Their bytecode goes to one temporary cache instead (PYTHONPYCACHEPREFIX), shared by
    the xdist workers and every subprocess, outside the tree, removed at the end."""
    if not sys.flags.dont_write_bytecode or hasattr(config, "workerinput") or sys.pycache_prefix:
        return  # bytecode is written as usual / a worker: the controller set it up / set already
    prefix = tempfile.mkdtemp(prefix="agentloop-tests-pycache-")
    saved = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # absent when set by `python -B`
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.pycache_prefix, sys.dont_write_bytecode = prefix, False

    def restore() -> None:
        sys.pycache_prefix, sys.dont_write_bytecode = None, True
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(prefix, ignore_errors=True)

    config.add_cleanup(restore)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    """A fresh fake FluxRouter on loopback with the default script (files needing a key or a handler
    define their own `router`, which overrides this one)."""
    async with FakeFluxRouter() as r:
        yield r
