"""Outside-in review, round 3: what a user's own objects and callbacks can do to a run. Each test
is the exact repro of a break found from the outside (public API only), kept as a regression
test; async ones run on asyncio and trio."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from pathlib import Path
from typing import Any

import pytest

from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    InputBudget,
    Limits,
    RetryPolicy,
    RunLimits,
    SQLiteJournal,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, error, text, tool_calls

pytestmark = pytest.mark.anyio


# --- config objects: a number that cannot work is refused where it is written ------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_bytes", 1.5),  # registered, then the run raised a raw TypeError when cutting a result
        ("output_bytes", math.nan),
        ("output_bytes", math.inf),
        ("timeout", math.nan),  # the call ended "raised ValueError: deadline must not be NaN"
        ("timeout", math.inf),
        ("cpu_s", math.nan),
        ("memory_mb", 1.5),
        ("memory_mb", math.inf),
        ("open_files", 64.0),
        ("file_size_mb", math.nan),
        ("scratch_mb", 0.5),
    ],
)
def test_a_limit_that_cannot_work_is_refused_at_construction(field: str, value: Any) -> None:
    with pytest.raises(
        ToolDefinitionError, match=rf"Limits\.{field} must be a positive.*or None \(no limit\)"
    ):
        Limits(**{field: value})


def test_limits_that_work_are_still_accepted() -> None:
    assert Limits(timeout=0.5, cpu_s=1.5, output_bytes=10, memory_mb=64, scratch_mb=8).output_bytes == 10
    assert Limits(timeout=10**30).timeout == 10**30  # a huge int is finite: no OverflowError either


async def test_a_fractional_output_bytes_no_longer_breaks_the_run_mid_way() -> None:
    # The exact repro: accepted at registration, then Agent.run raised
    # "TypeError: slice indices must be integers" once the result was longer than 1.5 bytes.
    with pytest.raises(ToolDefinitionError, match="output_bytes must be a positive int"):
        tools = ToolRegistry()

        @tools.tool(limits=Limits(output_bytes=1.5))
        async def long() -> str:
            return "x" * 100


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", math.nan), ("timeout", math.inf), ("deadline", math.nan), ("deadline", math.inf)],
)
def test_a_run_limit_that_is_not_finite_is_refused_at_construction(field: str, value: float) -> None:
    # timeout=nan raised anyio's raw "deadline must not be NaN" out of Agent.run; deadline=nan was
    # accepted and meant no deadline at all.
    with pytest.raises(ConfigurationError, match=f"{field} must be a .*finite"):
        RunLimits(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"max_retries": "5"}, "max_retries"),  # raw TypeError from a comparison
        ({"max_retries": -1}, "max_retries"),  # a plain ValueError, outside the tree
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": math.nan}, "max_retries"),  # accepted: retried without end
        ({"max_retries": math.inf}, "max_retries"),
        ({"initial_delay": "5"}, "initial_delay"),  # raw TypeError at the first retry, mid-run
        ({"initial_delay": -1}, "initial_delay"),  # raw ValueError at the first retry
        ({"max_delay": math.nan}, "max_delay"),
        ({"jitter": math.nan}, "jitter"),  # raw ValueError at the first retry
        ({"jitter": 2}, "jitter"),  # a negative delay: the same
        ({"max_retry_after": math.nan}, "max_retry_after"),
        ({"retry_statuses": {"500"}}, "retry_statuses"),  # accepted, never matched
        ({"retry_statuses": "500"}, "retry_statuses"),
        ({"retry_statuses": 500}, "retry_statuses"),
    ],
)
def test_a_retry_policy_that_cannot_work_is_a_configuration_error(kwargs: dict[str, Any], what: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\.{what} must be"):
        RetryPolicy(**kwargs)


def test_a_retry_policy_given_a_list_of_statuses_keeps_a_frozenset() -> None:
    policy = RetryPolicy(retry_statuses=[400])  # type: ignore[arg-type]
    assert policy.retry_statuses == frozenset({400}) and policy.should_retry_status(400, {})
    assert RetryPolicy(max_retries=0, initial_delay=0, jitter=0).max_retries == 0


@pytest.mark.parametrize("policy", [{"jitter": math.nan}, {"initial_delay": -1}])
async def test_a_retry_that_used_to_crash_mid_run_is_refused_before_any_request(
    policy: dict[str, Any],
) -> None:
    # The exact repro: the client was built, the first 429 came back, and the run raised
    # "ValueError: delay must be a non-negative number" instead of retrying or a typed error.
    async with FakeFluxRouter() as router:
        router.add(error(429, "slow down"), text("ok"))
        with pytest.raises(ConfigurationError, match="RetryPolicy"):
            FluxClient(api_key="k", base_url=router.base_url, retry=RetryPolicy(**policy))
        assert router.requests == []


# --- user callbacks: an observer or an error formatter never ends the run --------------------


class LibraryAbort(BaseException):
    """A library's own BaseException (pytest's `Failed`, gevent's `Timeout`), as the README's
    outcome table names them for tools."""


def _raising(exc: BaseException) -> Any:
    def callback(*_: Any) -> Any:
        raise exc

    return callback


def _own_cancel(sync: bool) -> Any:
    import asyncio

    def cancelled_future() -> Any:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return future

    def callback(*_: Any) -> Any:
        return cancelled_future().result()  # raises CancelledError: nobody cancelled this task

    async def async_callback(*_: Any) -> Any:
        await cancelled_future()  # an exporter awaiting a future its client cancelled

    return callback if sync else async_callback


def _failing_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def bad() -> str:
        raise ValueError("boom")

    return tools


# a CancelledError the callback raised itself exists on asyncio only: trio's Cancelled cannot be raised
CALLBACK_FAILURES = [("library", "asyncio"), ("library", "trio"), ("own-cancel", "asyncio")]


def _callback(kind: str, sync: bool = True) -> Any:
    return _raising(LibraryAbort("telemetry gave up")) if kind == "library" else _own_cancel(sync)


@pytest.mark.parametrize(("kind", "anyio_backend"), CALLBACK_FAILURES)
async def test_an_observer_that_raises_any_failure_is_logged_and_ignored(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # README: "an observer that raises is logged and ignored". An observer raising a library's
    # BaseException, or a CancelledError it raised itself (awaiting a future its exporter
    # cancelled), ended Agent.run with that exception.
    model = ScriptedModel([tool_calls(call("bad", {})), text("done")])
    agent = Agent(
        client=model, tools=_failing_tools(), observers=[_callback(kind), _callback(kind, sync=False)]
    )
    result = await agent.run("go")
    assert result.output == "done" and result.steps == 2
    assert any("observer" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("kind", "anyio_backend"), CALLBACK_FAILURES)
async def test_a_format_tool_error_that_raises_any_failure_sends_the_default_text(kind: str) -> None:
    # README: "A formatter that raises or returns a non-str is logged and the default text is
    # sent." One raising a BaseException subclass or its own CancelledError ended the run.
    model = ScriptedModel([tool_calls(call("bad", {})), text("done")])
    result = await Agent(client=model, tools=_failing_tools(), format_tool_error=_callback(kind)).run("go")
    assert result.output == "done"
    assert result.tool_calls[0].content == "Tool 'bad' raised ValueError: boom"


async def test_keyboard_interrupt_in_an_observer_still_ends_the_run() -> None:
    # The other side of the rule: a Ctrl-C lands in whatever code runs and must stop the program.
    model = ScriptedModel([text("done")])
    with pytest.raises(KeyboardInterrupt):
        await Agent(client=model, observers=[_raising(KeyboardInterrupt())]).run("go")


# --- tool shapes: a decorated tool that could never be called is refused at registration ------


def _to_text(fn: Any) -> Any:
    """A decorator that changes the signature but copies the wrapped one's metadata."""

    @functools.wraps(fn)
    def wrapper(y: str) -> str:
        return str(fn(int(y)))

    return wrapper


def _logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def test_a_wraps_decorator_that_changes_the_signature_is_refused_at_registration() -> None:
    # The exact repro: registered with the wrapped function's schema ({"x": integer}), then every
    # call the model made by that schema ended "raised TypeError: got an unexpected keyword
    # argument 'x'" mid-run; README: an unsupported signature raises ToolDefinitionError "then,
    # never mid-run".
    tools = ToolRegistry()
    with pytest.raises(
        ToolDefinitionError, match=r"functools\.wraps wrapper .* parameter 'x'.*__signature__"
    ):

        @tools.tool
        @_to_text
        def double(x: int) -> int:
            return 2 * x

    assert tools.definitions == []


async def test_a_wraps_decorator_that_passes_everything_on_still_registers_and_runs() -> None:
    tools = ToolRegistry()

    @tools.tool
    @_logged
    def double(x: int) -> int:
        return 2 * x

    def with_own_signature(y: str) -> str:
        return y * 2

    wrapper = _to_text(lambda x: x)
    wrapper.__signature__ = inspect.signature(with_own_signature)  # says what it really takes
    tools.register(wrapper, name="twice")
    model = ScriptedModel([tool_calls(call("double", {"x": 4}), call("twice", {"y": "3"})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == ["8", "3"]


# --- journal: an option that cannot work is refused before the run, not blamed on the file ----


@pytest.mark.parametrize("ttl", ["5", math.nan, math.inf, 0, -1, True, 10**400])
async def test_a_lease_ttl_that_cannot_work_is_a_configuration_error_before_any_write(
    ttl: Any, tmp_path: Path
) -> None:
    # The exact repros: lease_ttl="5" raised a raw TypeError out of Agent.run at the first write;
    # lease_ttl=nan raised JournalCorruptError ("damaged or not an agentloop journal") about a
    # healthy file; 10**400 an OverflowError; 0 and -1 let another machine take a live run at once.
    path = tmp_path / "runs.db"
    with pytest.raises(
        ConfigurationError, match=r"lease_ttl=\.\.\.\) must be a positive, finite number"
    ) as info:
        SQLiteJournal(path, lease_ttl=ttl)
    assert len(str(info.value)) < 200  # a huge value is not echoed whole
    assert not path.exists()


async def test_a_fractional_lease_ttl_still_works(tmp_path: Path) -> None:
    tools = ToolRegistry()

    @tools.tool
    async def t() -> str:
        return "x"

    journal = SQLiteJournal(tmp_path / "runs.db", lease_ttl=0.5)
    model = ScriptedModel([tool_calls(call("t", {})), text("done")])
    result = await Agent(client=model, tools=tools, journal=journal).run("go", run_id="r1")
    assert result.output == "done"
    assert (await Agent(client=ScriptedModel([]), journal=journal).resume("r1")).output == "done"


@pytest.mark.parametrize("field", ["request_timeout", "stream_idle_timeout"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_an_input_budget_timeout_that_is_no_bound_is_refused(field: str, value: float) -> None:
    # request_timeout=nan: every request raised anyio's raw "deadline must not be NaN" (the run
    # died with a ValueError); stream_idle_timeout=nan was accepted and silently removed the bound
    # on a server that stalls a stream, the very thing the budget exists for.
    with pytest.raises(ConfigurationError, match=rf"InputBudget\.{field} must be a positive, finite number"):
        InputBudget(**{field: value})


async def test_a_nan_request_timeout_no_longer_reaches_a_request() -> None:
    async with FakeFluxRouter() as router:
        router.add(text("ok"))
        with pytest.raises(ConfigurationError, match="request_timeout"):
            FluxClient(
                api_key="k", base_url=router.base_url, input_budget=InputBudget(request_timeout=math.nan)
            )
        async with FluxClient(
            api_key="k", base_url=router.base_url, input_budget=InputBudget(request_timeout=30.5)
        ) as client:
            assert (await Agent(client=client).run("x")).output == "ok"


@dataclasses.dataclass
class Transfer:
    amount: int
    fee: dataclasses.InitVar[int]  # an __init__ parameter, not a field
    note: str = "none"

    def __post_init__(self, fee: int) -> None:
        self.amount -= fee


async def test_a_dataclass_with_a_required_initvar_can_be_called() -> None:
    # The exact repro: the schema left `fee` out (dataclasses.fields() skips InitVars) and forbade
    # extra keys, so no call could ever succeed: with `fee` "Additional properties are not
    # allowed", without it "__init__() missing 1 required positional argument: 'fee'".
    tools = ToolRegistry()

    @tools.tool
    def pay(t: Transfer) -> int:
        return t.amount

    schema = tools.definitions[0]["function"]["parameters"]["properties"]["t"]
    assert schema["required"] == ["amount", "fee"] and schema["properties"]["fee"] == {"type": "integer"}
    model = ScriptedModel(
        [
            tool_calls(call("pay", {"t": {"amount": 10}}), call("pay", {"t": {"amount": 10, "fee": 3}})),
            text("ok"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "ok"]
    assert "'fee' is a required property" in result.tool_calls[0].content
    assert result.tool_calls[1].content == "7"


# --- the key from the environment is checked as the argument is ------------------------------

ENV_SECRET = "sk-round3-SECRET-7f3a"


@pytest.mark.parametrize(
    "key",
    [
        ENV_SECRET + "\n",  # a .env line or a secret file's newline: it was written into the request head
        "sk-£-" + ENV_SECRET,  # a raw UnicodeEncodeError whose .object held the whole head, key included
        ENV_SECRET + "\r\nX-Forged: 1",  # a header of the environment's choosing
        " ",
        "sk " + ENV_SECRET,
    ],
)
async def test_a_flux_api_key_from_the_environment_that_cannot_be_sent_is_refused_unshown(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README: FluxClient refuses "an API key with a newline — never echoed —" with a
    # ConfigurationError. That held for api_key=...; the same key from FLUX_API_KEY went
    # unchecked into the request head.
    monkeypatch.setenv("FLUX_API_KEY", key)
    async with FakeFluxRouter() as router:
        router.add(text("ok"))
        with pytest.raises(ConfigurationError, match="FLUX_API_KEY environment variable must be") as info:
            async with FluxClient(base_url=router.base_url) as client:
                await Agent(client=client).run("x")
        assert router.requests == []
    shown = f"{info.value!s} {info.value!r} {info.value.args!r}"
    assert "SECRET" not in shown and info.value.__cause__ is None


async def test_a_clean_flux_api_key_from_the_environment_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_KEY", ENV_SECRET)
    async with FakeFluxRouter(record_secrets=True) as router:
        router.add(text("ok"))
        async with FluxClient(base_url=router.base_url) as client:
            assert (await Agent(client=client).run("x")).output == "ok"
        assert router.requests[0].headers["authorization"] == f"Bearer {ENV_SECRET}"


@pytest.mark.parametrize("field", ["memory_mb", "cpu_s", "file_size_mb", "scratch_mb", "open_files"])
def test_a_limit_past_what_the_kernel_can_count_is_refused_at_construction(field: str) -> None:
    # The exact repro: Limits(memory_mb=10**30) (or cpu_s, file_size_mb) registered a "process"
    # tool, then every call ended "sandbox_unavailable: the child process could not be confined"
    # with a cut traceback (OverflowError in setrlimit).
    with pytest.raises(
        ToolDefinitionError, match=rf"Limits\.{field} must be at most \d+ .*None for no limit"
    ) as info:
        Limits(**{field: 10**30})
    assert len(str(info.value)) < 200


async def test_the_largest_limits_allowed_still_run_a_sandboxed_call() -> None:
    import sandbox_tools as st

    big = Limits(timeout=30, memory_mb=2**40, cpu_s=2**40, file_size_mb=2**40, open_files=2**31 - 1)
    tools = ToolRegistry(sandbox="process")
    tools.register(st.shout, limits=big)
    async with tools:
        result = await Agent(
            client=ScriptedModel([tool_calls(call("shout", {"text": "hi"})), text("done")]), tools=tools
        ).run("go")
    assert (result.tool_calls[0].status, result.tool_calls[0].content) == ("ok", "HI")


# --- approval: an async predicate is awaited, not taken for "yes" -----------------------------


async def test_an_async_require_approval_predicate_is_awaited() -> None:
    # The exact repro: `async def` predicates passed the construction check (a callable of two
    # arguments), then their coroutine was truthy: every call paused for approval whatever the
    # predicate said, its code never ran ("coroutine was never awaited").
    tools = ToolRegistry()
    ran: list[str] = []

    @tools.tool
    async def delete_row(key: str) -> str:
        ran.append(key)
        return "deleted"

    asked: list[tuple[str, dict[str, Any]]] = []

    async def only_protected(name: str, arguments: dict[str, Any]) -> bool:
        asked.append((name, arguments))
        return arguments["key"].startswith("protected/")

    model = ScriptedModel(
        [
            tool_calls(call("delete_row", {"key": "tmp/1"}), call("delete_row", {"key": "protected/2"})),
            text("done"),
        ]
    )
    result = await Agent(client=model, tools=tools, require_approval=only_protected).run("go")
    assert result.stop_reason == "approval_required"
    assert [p.arguments for p in result.pending] == [{"key": "protected/2"}]
    assert ran == ["tmp/1"] and len(asked) == 2
