"""Temporal runs between agentloop versions, and from the outside.

1. Versions: a spec says which features it needs (`requires`: {feature: agentloop version}); a
   worker that cannot honour one fails the run at once with `IncompatibleWorkerError` (a
   `ConfigurationError`) naming the feature and the version, never ignores it; a new worker
   still runs an agentloop 0.1 spec. Specs are written here as an older or newer peer writes them.
2. Hostile input: workflow inputs and activity inputs anyone who can reach the task queue may
   send (wrong types, deeply nested, huge, not JSON), a run cancelled mid-activity, a history
   processor returning the wrong thing. Each ends in a typed error, never a hang (every wait is
   bounded by `fail_after`) or a worker crash.

Asyncio only (Temporal's SDK); the dev server of tests/test_temporal.py.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import agentloop
from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    Handoff,
    History,
    Limits,
    RunContext,
    ToolRegistry,
)
from agentloop.temporal import (
    AgentRun,
    IncompatibleWorkerError,
    TemporalRunError,
    create_worker,
    start_run,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import temporal_tools
import test_temporal
import test_temporal_parity
from test_temporal_parity import both

anyio_backend, env = test_temporal.anyio_backend, test_temporal.env  # its fixtures

pytestmark = pytest.mark.anyio
BOUND_S = 60  # a workflow task that fails is retried forever: a hang must fail the test, not block it
WORKFLOW = "agentloop.Agent"


def fresh() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def base_spec(**agent: Any) -> dict[str, Any]:
    from agentloop.temporal._spec import agent_spec  # internal unit under test

    return agent_spec(Agent(client=ScriptedModel([]), **agent))


async def start_raw(
    env: WorkflowEnvironment, data: Any, script: list[Any] | None = None
) -> tuple[Any, Any, Any]:
    """Start the agent workflow with `data` as any client may, wait (bounded) for the end; return
    the outcome (result or exception), the model requests made and the history."""
    queue = fresh()
    async with (
        FakeFluxRouter(list(script or [text("ok")])) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            handle = await env.client.start_workflow(
                WORKFLOW, data, id=f"raw-{uuid.uuid4().hex[:8]}", task_queue=queue
            )
            try:
                with anyio.fail_after(BOUND_S):
                    out: Any = await AgentRun(handle).result()
            except TemporalRunError as e:
                out = e
            return out, router.model_requests, await handle.fetch_history()


def activities_scheduled(history: Any) -> list[str]:
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")]  # fmt: skip


# --- 1. versions ------------------------------------------------------------------------------------


def shorten(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages


def pick(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages


def who(ctx: RunContext[Any]) -> str:
    return "You bill."


def test_a_spec_requires_exactly_the_features_it_uses() -> None:
    from agentloop.temporal._version import FEATURES, requirements  # internal unit under test

    billing = Agent(client=ScriptedModel([]), name="billing", instructions=who)
    assert requirements(base_spec()) == {}  # an agent any worker runs: nothing required
    assert requirements(base_spec(output_type=str | int)) == {"text_output": "0.2.0"}
    assert requirements(base_spec(history=History(processor=shorten))) == {"history_processor": "0.2.0"}
    assert requirements(base_spec(handoffs=[Handoff(billing, input_filter=pick)])) == {
        "dynamic_instructions": "0.2.0",
        "handoff_input_filter": "0.2.0",
    }
    assert set(FEATURES.values()) == {"0.2.0"}  # the features after 0.1's format, with their version


@given(
    requires=st.dictionaries(
        st.one_of(st.sampled_from(["text_output", "history_processor"]), st.text(min_size=1, max_size=12)),
        st.sampled_from(["0.2.0", "0.9.0", "0.10.1", "1.0"]),
        max_size=4,
    )
)
@settings(max_examples=80, deadline=None)
def test_a_worker_refuses_any_feature_it_does_not_know_and_names_it(requires: dict[str, str]) -> None:
    from agentloop.temporal._agents import SpecError  # internal unit under test
    from agentloop.temporal._version import FEATURES, INCOMPATIBLE, check_spec  # internal unit under test

    spec = {**base_spec(), "requires": requires, "agentloop": "9.9.9"}
    unknown = {f: v for f, v in requires.items() if f not in FEATURES}
    if not unknown:
        check_spec(spec)  # known features: read as usual
        return
    with pytest.raises(SpecError) as e:
        check_spec(spec)
    assert e.value.kind == INCOMPATIBLE and e.value.details == {
        "features": unknown,
        "worker": agentloop.__version__,
    }
    message = str(e.value)
    assert all(f"{f!r} (agentloop >= {v})" in message for f, v in unknown.items())
    newest = max(unknown.values(), key=lambda v: [int(p) for p in v.split(".")])
    assert f"to agentloop >= {newest} " in message and "started by agentloop 9.9.9" in message


async def test_a_spec_from_a_newer_client_fails_at_once_naming_the_feature_and_version(
    env: WorkflowEnvironment,
) -> None:
    spec = {
        **base_spec(),
        "requires": {"text_output": "0.2.0", "quantum_tools": "0.9.0"},
        "agentloop": "0.9.0",
    }
    out, sent, history = await start_raw(env, {"agent": spec, "prompt": "hi", "messages": None, "deps": None})
    assert isinstance(out, IncompatibleWorkerError) and isinstance(out, ConfigurationError)
    assert out.error_type == "IncompatibleWorkerError"
    assert f"this worker runs agentloop {agentloop.__version__}" in str(out)
    assert "'quantum_tools' (agentloop >= 0.9.0)" in str(out) and "started by agentloop 0.9.0" in str(out)
    assert sent == [] and activities_scheduled(history) == []  # at once: not even the tools were asked


@pytest.mark.parametrize("where", ["root", "nested"])
async def test_a_field_a_newer_client_forgot_to_declare_is_refused_not_ignored(
    env: WorkflowEnvironment, where: str
) -> None:
    billing = Agent(client=ScriptedModel([]), name="billing")
    spec = base_spec(handoffs=[billing])
    node = spec if where == "root" else spec["agents"]["a1"]
    node["quantum"] = {"qubits": 3}
    out, sent, history = await start_raw(env, {"agent": spec, "prompt": "hi", "messages": None, "deps": None})
    assert isinstance(out, IncompatibleWorkerError) and "does not know the fields ['quantum']" in str(out)
    assert sent == [] and activities_scheduled(history) == []


async def test_a_new_worker_runs_a_spec_written_by_agentloop_0_1(env: WorkflowEnvironment) -> None:
    """0.1's spec: no name, no tool list (every worker tool), no requires, no version."""
    old = {"model": "flux-auto", "instructions": "Be brief.", "tool_choice": "auto", "reset_tool_choice": True,
           "max_concurrent_tools": None, "model_settings": {"temperature": 0.1},
           "limits": {"max_steps": 10, "max_tool_calls": None, "max_total_tokens": None, "timeout": None,
                      "deadline": None, "loop_threshold": 3}}  # fmt: skip
    script = [tool_calls(call("get_weather", {"city": "Lisbon"}, id="w")), text("Sunny.")]
    out, sent, _ = await start_raw(env, {"agent": old, "prompt": "Weather?", "messages": None}, script)
    assert not isinstance(out, Exception), str(out)
    assert out.output == "Sunny." and [r.status for r in out.tool_calls] == ["ok"]
    first = sent[0].json
    assert first["messages"][0] == {"role": "system", "content": "Be brief."} and first["temperature"] == 0.1
    assert {t["function"]["name"] for t in first["tools"]} == set(temporal_tools.registry.names)


async def test_a_worker_without_a_feature_refuses_a_run_that_needs_it(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older worker, as one that knows every feature but dynamic instructions would be."""
    from agentloop.temporal import _version  # internal: the worker's feature table

    monkeypatch.setattr(_version, "HONOURED", _version.HONOURED - {"dynamic_instructions"})
    make = test_temporal_parity.triage_to_billing(None, test_temporal_parity.billing_instructions)
    remote, sent, history = await test_temporal_parity.on_temporal(
        env, make, test_temporal_parity.HANDOFF, "go", functions=test_temporal_parity.INSTRUCTIONS
    )
    assert isinstance(remote, IncompatibleWorkerError)
    assert "'dynamic_instructions' (agentloop >= 0.2.0)" in str(remote) and sent == []
    assert activities_scheduled(history) == []


# --- 2. hostile workflow input ---------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "payload",
    [b'{"agent": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"{not json", b"[1, 2, 3]"],
    ids=["nested_100k", "not_json", "not_an_object"],
)
async def test_a_workflow_input_that_cannot_be_read_fails_the_run_instead_of_hanging(
    env: WorkflowEnvironment, payload: bytes
) -> None:
    raw = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=payload))
    out, sent, _ = await start_raw(env, raw)
    assert isinstance(out, TemporalRunError) and out.error_type == "ConfigurationError"
    assert "start_run" in str(out) and sent == []


@pytest.mark.parametrize(
    "damage",
    [{"model": None}, {"model": 5}, {"tools": "search"}, {"handoffs": 5}, {"agents": []},
     {"requires": ["text_output"]}, {"instructions_function": 5}, {"instructions_function": "os:system"},
     {"instructions": 5}, {"model_settings": "x"}, {"tool_choice": {"weird": 1}},
     {"tool_choice": "no_such_tool"}, {"max_concurrent_tools": "x"},
     {"agent_tools": [{"name": 1, "description": None, "agent": "a0"}]},
     {"own": {"instructions": ["not", "text"]}}, {"own": {"model": 5}}, {"own": "x"}],
    ids=repr,
)  # fmt: skip
async def test_a_spec_with_wrong_types_fails_the_run_clearly_before_any_request(
    env: WorkflowEnvironment, damage: dict[str, Any]
) -> None:
    spec = {**base_spec(), **damage}
    out, sent, _ = await start_raw(env, {"agent": spec, "prompt": "hi", "messages": None, "deps": None})
    assert isinstance(out, TemporalRunError) and isinstance(out.error_type, str)
    assert out.error_type == "ConfigurationError" and sent == []


async def test_inputs_start_run_cannot_send_are_refused_before_anything_starts(
    env: WorkflowEnvironment,
) -> None:
    agent = Agent(client=ScriptedModel([]), tools=temporal_tools.registry)
    queue = fresh()  # no worker: nothing may start
    with pytest.raises(ConfigurationError, match="deps on Temporal must be JSON data"):
        await start_run(env.client, agent, "hi", task_queue=queue, deps={"a": nested(5000)})
    with pytest.raises(agentloop.ConversationError, match="cannot be sent as JSON"):
        await start_run(env.client, agent, task_queue=queue,
                        messages=[{"role": "user", "content": "hi", "extra": nested(5000)}])  # fmt: skip
    with pytest.raises(ConfigurationError, match="larger than the Temporal server accepts"):
        await start_run(env.client, agent, "x" * 3_000_000, task_queue=queue)


# --- 2. hostile activity input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activity", "data"),
    [("tool_call", None), ("tool_call", {"name": 5}), ("tool_call", {"name": "boom", "arguments": "x=1"}),
     ("model_request", []), ("model_request", {"model": "m", "delta": "hi"}),
     ("call_function", {"ref": "os:system", "kind": "history"}), ("call_function", {"ref": ["x"]}),
     ("call_function", {"kind": "instructions"})],
    ids=repr,
)  # fmt: skip
async def test_activity_input_not_from_the_agent_workflow_is_refused_for_good(
    activity: str, data: Any
) -> None:
    """Any workflow on the queue may schedule agentloop's activities: one that is not an agentloop
    workflow's input fails that activity, not retried (a KeyError would be, as if the worker were lost)."""
    from agentloop.temporal._activities import AgentActivities  # internal unit under test

    acts = AgentActivities(ScriptedModel([]), temporal_tools.registry, functions=[shorten])
    with pytest.raises(ApplicationError) as e:
        await ActivityEnvironment().run(getattr(acts, activity), data)
    assert e.value.non_retryable and e.value.type == "ConfigurationError"
    assert acts.tool_executions == 0


# --- 2. a run cancelled while an activity runs ----------------------------------------------------------


async def test_a_run_cancelled_mid_tool_call_ends_cancelled_and_the_worker_stops_cleanly(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    monkeypatch.setenv("AGENTLOOP_SIDE_EFFECTS", str(effects))
    queue = fresh()
    script = [tool_calls(call("wait_forever", {"key": "k"}, id="w")), text("never")]
    with anyio.fail_after(BOUND_S):
        async with (
            FakeFluxRouter(script) as router,
            FluxClient(base_url=router.base_url, api_key="k") as model,
        ):
            from agentloop.temporal import WorkerOptions

            options = WorkerOptions(heartbeat_timeout=1)
            async with create_worker(
                env.client, queue, tools=temporal_tools.registry, model=model, options=options
            ):
                agent = Agent(client=ScriptedModel([]), tools=temporal_tools.registry)
                run = await start_run(env.client, agent, "go", task_queue=queue)
                async for event in run.handle.fetch_history_events(wait_new_event=True):  # no sleeping
                    attrs = event.activity_task_scheduled_event_attributes
                    if event.HasField(
                        "activity_task_scheduled_event_attributes"
                    ) and attrs.activity_type.name == ("agentloop.tool_call"):
                        break
                await run.cancel()
                with pytest.raises(TemporalRunError) as e:
                    await run.result()
            # leaving the worker returned: the tool was cancelled, nothing is left running
    assert "was cancelled" in str(e.value) and len(router.model_requests) == 1
    events = (await run.handle.fetch_history()).events
    assert any(ev.HasField("activity_task_cancel_requested_event_attributes") for ev in events)


# --- 2. a history processor that returns the wrong thing ---------------------------------------------


def returns_text(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
    return "summary"


def returns_numbers(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
    return [1, 2]


def returns_nothing(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
    return []


@pytest.mark.parametrize(
    "processor", [returns_text, returns_numbers, returns_nothing], ids=lambda f: f.__name__
)
async def test_a_processor_returning_the_wrong_type_fails_the_run_as_in_process(
    env: WorkflowEnvironment, processor: Any
) -> None:
    def make(model: Any) -> Agent[Any, Any]:
        return Agent(client=model, tools=ToolRegistry(), history=History(processor=processor))

    b = await both(env, make, [text("never")], functions=[processor])
    assert isinstance(b.local, ConfigurationError) or isinstance(b.local, agentloop.AgentloopError)
    assert isinstance(b.remote, TemporalRunError) and b.remote.error_type == type(b.local).__name__
    assert str(b.local) in str(b.remote) and b.remote_sent == b.local_sent == []


# --- 2. a tool result larger than a history event may hold ----------------------------------------------

huge_tools = ToolRegistry()


@huge_tools.tool(limits=Limits(output_bytes=None))  # no cap in-process: the model would get all of it
async def dump(n: int) -> str:
    """Dump n bytes."""
    return "\u0001" * n  # escaped as JSON: 6 bytes each


async def test_a_tool_result_too_large_for_the_history_is_truncated_not_an_unknown_outcome(
    env: WorkflowEnvironment,
) -> None:
    """Temporal refuses a payload over ~2 MB; the result used to be lost and reported as "outcome
    unknown: the worker was lost" although the tool had run."""
    queue = fresh()
    script = [tool_calls(call("dump", {"n": 1_000_000}, id="d")), text("done")]
    with anyio.fail_after(BOUND_S):
        async with (
            FakeFluxRouter(script) as router,
            FluxClient(base_url=router.base_url, api_key="k") as model,
        ):
            async with create_worker(env.client, queue, tools=huge_tools, model=model):
                agent = Agent(client=ScriptedModel([]), tools=huge_tools)
                result = await (await start_run(env.client, agent, "go", task_queue=queue)).result()
    [record] = result.tool_calls
    assert result.output == "done" and record.status == "output_limit"
    assert record.error and record.error.endswith(" bytes of JSON")  # the cause, for the run's reader
    assert int(record.error.split()[0]) > 6_000_000
    # a limit's text is an error text: cut to the loop's error budget, as in-process (8 KB)
    assert record.content.startswith("\x01" * 1000) and "[error text truncated:" in record.content
    assert router.model_requests[1].json["messages"][-1]["content"] == record.content  # what the model read
