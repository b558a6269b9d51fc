"""The Quick start with the mistakes a new user makes: every one is a clear, typed error from the
AgentloopError tree (at construction or registration where possible), the same on asyncio and
trio, never a raw error from internals and never the API key."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import anyio
import anyio.from_thread
import pytest

from agentloop import (
    Agent,
    AgentloopError,
    ConfigurationError,
    FluxClient,
    Limits,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio
KEY = "sk-outside-everyday-SECRET-42"


@pytest.mark.parametrize("run_id", ["", 5, b"r1", ["r1"]])
async def test_a_run_id_that_is_not_a_non_empty_str_is_refused(run_id: Any) -> None:
    # run_id="" silently became a new id (a journaled run then could not be found under the id
    # the caller gave); run_id=5 raised "TypeError: 'int' object is not subscriptable".
    agent = Agent(client=ScriptedModel([text("ok")]))
    with pytest.raises(ConfigurationError, match="run_id must be a non-empty str"):
        await agent.run("hi", run_id=run_id)


async def test_an_async_tool_forced_into_a_thread_is_refused_at_registration() -> None:
    # Accepted, then every call failed mid-run, differently per backend (asyncio: invalid_result
    # plus "coroutine was never awaited"; trio: "Trio expected a sync function").
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="sandbox='thread' runs a sync function"):

        @tools.tool(sandbox="thread")
        async def lookup(key: str) -> str:
            return key

    assert tools.definitions == []


async def _later() -> int:
    return 1


async def test_a_sync_tool_that_returns_a_coroutine_is_the_same_clear_error_on_both_backends() -> None:
    # A forgotten `await` (or an async function behind a sync wrapper the registry cannot see
    # through): trio raised its own puzzling TypeError, asyncio reported an unencodable result.
    tools = ToolRegistry()

    @tools.tool
    def forgot_await() -> int:
        return _later()  # type: ignore[return-value]

    model = ScriptedModel([tool_calls(call("forgot_await", {})), text("done")])
    with _no_never_awaited_warning():
        result = await Agent(client=model, tools=tools).run("go")
    record = result.tool_calls[0]
    assert record.status == "raised"
    assert "returned a coroutine, which nothing awaits (a missing `await`?)" in record.content


class _no_never_awaited_warning:
    """The coroutine is closed, not dropped: no RuntimeWarning 'was never awaited' at GC."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.collect()
        self._catch.__exit__(*exc)
        assert not [w for w in self._seen if "never awaited" in str(w.message)]


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://a\nb/v1",
        "http:///v1",
        "http://127.0.0.1:99999/v1",
        "http://host.example:0/v1",
        "http://host.example:-1/v1",
        "api.fluxrouter.ai/v1",
        "ftp://api.fluxrouter.ai/v1",
    ],
)
async def test_a_malformed_base_url_is_a_configuration_error(url: str) -> None:
    # `FluxClient(base_url="http://[::1")` (a typo'd IPv6 address) got through construction and
    # the run raised httpx.InvalidURL ("Invalid port: ':1'"), outside the AgentloopError tree;
    # port 99999 raised a raw OverflowError from connect().
    with pytest.raises(ConfigurationError) as info:
        async with FluxClient(base_url=url, api_key=KEY) as client:
            await Agent(client=client).run("hi")
    assert KEY not in str(info.value)


async def test_a_wrong_key_is_a_typed_error_that_never_shows_the_key() -> None:
    async with FakeFluxRouter([text("unreachable")], api_key="the-right-key") as router:
        async with FluxClient(base_url=router.base_url, api_key=KEY) as client:
            with pytest.raises(AgentloopError) as info:
                await Agent(client=client).run("hi")
    assert type(info.value).__name__ == "AuthenticationError"
    assert KEY not in str(info.value) and KEY not in repr(info.value)


@pytest.mark.parametrize("steps", [0, -1, 1.5, "3", True])
def test_a_nonsense_step_limit_is_refused_at_construction(steps: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_steps must be an integer >= 1"):
        Agent(client=ScriptedModel([]), max_steps=steps)


def _stuck_tool(release: threading.Event, started: threading.Event, threads: list[threading.Thread]) -> Agent:
    tools = ToolRegistry()

    @tools.tool(limits=Limits(timeout=0.01))
    def stuck() -> str:
        threads.append(threading.current_thread())
        started.set()
        release.wait()
        return "late"

    return Agent(client=ScriptedModel([tool_calls(call("stuck", {})), text("done")]), tools=tools)


async def test_an_abandoned_thread_tool_does_not_keep_the_process_alive(anyio_backend: str) -> None:
    # A `def` tool whose run is cancelled (or that times out) is abandoned: Python cannot kill a
    # thread. On asyncio it ran in anyio's worker thread, which is not a daemon: a script whose run
    # had ended then hung at interpreter exit until the stuck tool returned (forever, for a tool
    # stuck on I/O). Now it runs in a daemon thread on both backends (trio's thread cache;
    # agentloop's own on asyncio).
    release, threads = threading.Event(), []
    entered = anyio.Event()
    tools = ToolRegistry()

    @tools.tool
    def stuck() -> str:
        threads.append(threading.current_thread())
        anyio.from_thread.run_sync(entered.set)
        release.wait()
        return "late"

    agent = Agent(client=ScriptedModel([tool_calls(call("stuck", {})), text("done")]), tools=tools)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, "go")
            await entered.wait()
            tg.cancel_scope.cancel()  # the run ends; its tool's thread is abandoned, still running
        assert threads[0].is_alive() and threads[0].daemon
    finally:
        release.set()


async def test_a_timed_out_thread_tool_is_said_in_its_outcome_and_not_warned_about(
    anyio_backend: str,
) -> None:
    """The outcome says the thread was abandoned; no RuntimeWarning on either backend (it was said
    on asyncio while the abandoned thread kept the interpreter from exiting)."""
    release, started, threads = threading.Event(), threading.Event(), []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = await _stuck_tool(release, started, threads).run("go")
        assert result.tool_calls[0].status == "timeout"
        assert "worker thread was abandoned" in result.messages[-2]["content"]
        assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    finally:
        release.set()


EXTRA_IMPORT = """
import sys
sys.modules[{dep!r}] = None  # the extra is not installed
from agentloop import MissingDependencyError
try:
    import agentloop.{module}
except MissingDependencyError as e:
    assert "pip install 'agentloop[{extra}]'" in str(e), str(e)
    print("clear")
"""


@pytest.mark.parametrize(
    ("module", "dep", "extra"),
    [
        ("ui", "jinja2", "ui"),
        ("ui", "starlette", "ui"),
        ("temporal", "temporalio", "temporal"),
    ],
)
def test_importing_an_extra_that_is_not_installed_is_a_missing_dependency_error(
    module: str, dep: str, extra: str
) -> None:
    # README's tree: "MissingDependencyError  an optional extra is not installed".
    import subprocess
    import sys

    code = EXTRA_IMPORT.format(dep=dep, module=module, extra=extra)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "clear"), done.stderr[-2000:]
