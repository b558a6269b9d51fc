"""Outside-in review, round 5: a Python developer who knows the OpenAI Agents SDK / PydanticAI
evaluates agentloop for an async service (a fresh install, the tools people write, FastAPI-style
embedding, their own pytest suite). Each test is the exact repro of a break found from the outside
(public API only), kept as a regression test; async ones run on asyncio and trio."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
import sandbox_tools as st
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as hs

from agentloop import Agent, ConfigurationError, FluxClient, Limits, ToolRegistry, build_tool
from agentloop.testing import FakeFluxRouter, FunctionModel, ScriptedModel, call, text

pytestmark = pytest.mark.anyio

PACKAGE = Path(__file__).resolve().parent.parent / "agentloop"


# --- a fresh install: what `pip install agentloop` brings is all agentloop imports ---------------


def test_run_sync_works_where_sniffio_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # `pip install -e .` into a fresh venv has no sniffio (recent anyio no longer depends on it):
    # run_sync raised ModuleNotFoundError: No module named 'sniffio' before it did anything
    monkeypatch.setitem(sys.modules, "sniffio", None)  # `import sniffio` raises ImportError
    agent = Agent(client=FunctionModel(lambda messages, tools: "hi"))
    assert agent.run_sync("x").output == "hi"


async def test_run_sync_inside_a_loop_is_still_refused_without_sniffio(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    monkeypatch.setitem(sys.modules, "sniffio", None)
    agent = Agent(client=FunctionModel(lambda messages, tools: "hi"))
    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    with pytest.raises(ConfigurationError, match=f"inside a running {backend} event loop.*await agent.run"):
        agent.run_sync("x")


# Imported by agentloop but brought by a declared dependency that cannot work without it.
_BROUGHT_BY = {
    "multidict": "aiohttp's own header type (only aiohttp hands one over; the import is guarded)",
    "httpx2": "the HTTP client of mcp (the mcp extra)",
}


def _imported_top_level_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(PACKAGE.parent)))
    return found


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def test_every_third_party_module_agentloop_imports_is_a_declared_dependency() -> None:
    # sniffio was imported by run_sync but declared nowhere: it came with anyio until anyio dropped it
    requires = importlib.metadata.requires("agentloop") or []
    declared = {_norm(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires}
    owners = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module == "agentloop" or module in _BROUGHT_BY:
            continue
        dists = {_norm(d) for d in owners.get(module, [module])}
        if not dists & declared:
            undeclared[module] = where
    assert undeclared == {}, f"imported but not declared in pyproject.toml (core or an extra): {undeclared}"


# --- a large result: the model reads up to Limits.output_bytes of it, under a true marker --------


async def _big() -> str:
    return "x" * 200_000


def _big_sync() -> str:
    return "x" * 200_000


@pytest.mark.parametrize("mode", ["inline", "thread", "process"])
async def test_a_result_over_output_bytes_reaches_the_model_cut_at_output_bytes(mode: str) -> None:
    # the default Limits(output_bytes=64_000): the model got 8 KiB of the result (the error budget cut
    # it again) under "[error text truncated: 64047 bytes, limit 8192]", not the result's real size
    tools = ToolRegistry(limits=Limits(timeout=30))
    fn = {"inline": _big, "thread": _big_sync, "process": st.echo}[mode]
    sandbox = "process" if mode == "process" else None
    tools.register(fn, name="big", sandbox=sandbox)
    args = {"text": "x", "n": 200_000} if mode == "process" else {}
    seen: list[str] = []

    def model(messages: list[dict], offered: list[dict]) -> object:
        if messages[-1]["role"] == "user":
            return [call("big", args)]
        seen.append(messages[-1]["content"])
        return "done"

    async with tools:
        result = await Agent(client=FunctionModel(model), tools=tools).run("go")
    record = result.tool_calls[0]
    assert record.status == "output_limit"
    assert seen == [record.content]
    assert 60_000 < len(record.content.encode()) <= 64_000 + 512
    assert "error text truncated" not in record.content
    assert re.search(r"output truncated: .*200,?0\d\d", record.content), record.content[-200:]


# --- a PydanticAI user's Agent(...): the model object and the model name change places ------------


def test_a_model_object_given_as_model_says_it_goes_in_client() -> None:
    # PydanticAI writes Agent(model=TestModel()): the message said only "model must be a non-empty
    # string such as 'flux-auto', got <...TestModel object at 0x...>"
    with pytest.raises(ConfigurationError, match=r"got a ScriptedModel object.*goes in client=") as e:
        Agent(client=ScriptedModel([text("hi")]), model=ScriptedModel([text("hi")]))  # type: ignore[arg-type]
    assert " at 0x" not in str(e.value)


async def test_a_model_object_given_as_a_runs_model_says_it_goes_in_client() -> None:
    agent = Agent(client=ScriptedModel([text("hi")]))
    with pytest.raises(ConfigurationError, match=r"goes in client="):
        await agent.run("x", model=FunctionModel(lambda messages, tools: "hi"))  # type: ignore[arg-type]


def test_a_model_name_given_as_client_says_it_goes_in_model() -> None:
    # was: "client must implement the Model interface (e.g. a FluxClient ...), got 'flux-auto'"
    with pytest.raises(ConfigurationError, match=r"a model name goes in model= .*model='flux-pinned-gpt-5'"):
        Agent(client="flux-pinned-gpt-5")  # type: ignore[arg-type]


# --- the user's own pytest-asyncio fixture around FakeFluxRouter ---------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # pytest-asyncio's way: trio ends such a task itself
async def test_a_router_closed_in_another_task_says_why_and_what_to_use() -> None:
    # pytest-asyncio (1.x) sets an async fixture up in one task and tears it down in another: the
    # teardown of `async with FakeFluxRouter() as r: yield r` raised anyio's bare "Attempted to
    # exit cancel scope in a different task than it was entered in", and an accept loop then died
    # of ClosedResourceError ("Task exception was never retrieved")
    router = FakeFluxRouter()
    await asyncio.get_running_loop().create_task(router.__aenter__())  # what pytest-asyncio's setup does
    with pytest.raises(RuntimeError, match=r"closed in another task.*pytest-asyncio.*fake_router.*anyio"):
        await router.__aexit__(None, None, None)
    with pytest.raises(OSError):  # the server is stopped: its port refuses
        await anyio.connect_tcp("127.0.0.1", int(router.url.rsplit(":", 1)[1]))


# --- FastAPI-style embedding: the first thing a web developer writes ------------------------------


def test_a_module_level_client_under_starlettes_test_client_is_pointed_to_the_lifespan() -> None:
    # Starlette's TestClient (outside `with`) runs each request in an event loop of its own: a client
    # created at module level served the first request and refused the second, telling a web
    # developer to create it "in the function given to asyncio.run / trio.run / anyio.run"
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(FakeFluxRouter(lambda request: text("hi"))) as router,
    ):
        client = FluxClient(base_url=router.base_url, api_key="sk-test")
        agent = Agent(client=client)

        async def ask(request: object) -> PlainTextResponse:
            return PlainTextResponse((await agent.run("x")).output)

        http = TestClient(Starlette(routes=[Route("/ask", ask)]))
        assert http.get("/ask").text == "hi"
        with pytest.raises(ConfigurationError, match=r"another event loop.*in the app's lifespan"):
            http.get("/ask")


# --- an argument that fails inside `X | None`: the model is told which field to fix ---------------


@dataclass
class Address:
    street: str
    zip: int


def ship(
    to: Address | None = None, codes: list[int] | None = None, speed: Literal["std", "fast"] | None = None
) -> str:
    """Ship an order."""
    return "shipped"


@pytest.mark.parametrize(
    ("arguments", "told"),
    [
        ({"to": {"street": "Main", "zip": "x"}}, "$.to.zip: 'x' is not of type 'integer'"),
        ({"to": {"street": "Main"}}, "$.to: 'zip' is a required property"),
        ({"codes": [1, "two"]}, "$.codes[1]: 'two' is not of type 'integer'"),
        ({"speed": "slow"}, "$.speed: 'slow' is not one of ['std', 'fast']"),
        ({"to": 3}, "$.to: 3 is not valid under any of the given schemas"),  # meant for neither: as it was
    ],
)
async def test_a_bad_optional_argument_names_the_field_to_fix(arguments: dict[str, Any], told: str) -> None:
    # every `X | None` parameter answered "$.to: {'street': 'Main', 'zip': 'x'} is not valid under any
    # of the given schemas": no field named, the model had nothing to correct
    def model(messages: list[dict], offered: list[dict]) -> object:
        return [call("ship", arguments)] if messages[-1]["role"] == "user" else "done"

    result = await Agent(client=FunctionModel(model), tools=[ship]).run("go")
    record = result.tool_calls[0]
    assert record.status == "invalid_arguments"
    assert f"- {told}\n" in record.content, record.content


@dataclass
class Order:
    id: str
    to: Address | None = None


async def test_a_bad_optional_field_of_a_structured_output_names_the_field_to_fix() -> None:
    from agentloop import OutputValidationError

    bad = {"id": "A1", "to": {"street": "Main", "zip": "x"}}
    agent = Agent(client=ScriptedModel([text(json.dumps(bad))] * 2), output_type=Order, output_mode="native")
    with pytest.raises(OutputValidationError) as e:
        await agent.run("go")
    assert e.value.errors == ["$.to.zip: 'x' is not of type 'integer'"]


_JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.text("abz", max_size=3),
    lambda inner: (
        hs.lists(inner, max_size=3)
        | hs.dictionaries(hs.sampled_from(["street", "zip", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _resolve(value: Any, path: str) -> Any:
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path.removeprefix("$")):
        value = value[key] if key else value[int(index)]
    return value


@settings(max_examples=examples(50))
@given(to=_JSON, codes=_JSON, speed=_JSON)
def test_every_named_path_is_in_what_the_model_sent(to: Any, codes: Any, speed: Any) -> None:
    # the precise error must still point into the arguments the model sent, never at a field it
    # did not send (the branch chosen is the one the value was meant for)
    arguments = {"to": to, "codes": codes, "speed": speed}
    for line in build_tool(ship).validation_errors(arguments):
        path = line.split(": ", 1)[0]
        _resolve(arguments, path)  # raises KeyError / IndexError / TypeError if not there
