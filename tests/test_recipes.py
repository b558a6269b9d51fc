"""The recipes of docs/recipes.md, exercised: the FastAPI service and the durable worker.

FastAPI's app is driven through httpx's ASGITransport (no server, no network beyond the fake
router on 127.0.0.1); the worker is "killed" by cancelling it while a tool is in flight, then
restarted on the same journal and job directory.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from agentloop import Agent, FluxClient, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, error

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the example look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_API_KEY", raising=False)


# --- FastAPI -----------------------------------------------------------------------------------


async def test_fastapi_service_shares_one_client_across_concurrent_requests() -> None:
    pytest.importorskip("fastapi")
    import httpx

    service = load("fastapi_service")
    answers: dict[str, Any] = {}
    async with service.lifespan(service.app):
        agent = service.app.state.agent
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:

            async def ask(city: str) -> None:
                response = await http.post("/ask", json={"prompt": f"Weather in {city}?"})
                assert response.status_code == 200
                answers[city] = response.json()

            async with anyio.create_task_group() as tg:
                for city in ("Lisbon", "Paris", "Tokyo"):
                    tg.start_soon(ask, city)
            bad = await http.post("/ask", json={"prompt": ""})
            assert service.app.state.agent is agent  # one agent (and one client) for every request
    assert bad.status_code == 422  # FastAPI's validation of the request body
    assert {c: a["output"] for c, a in answers.items()} == {
        "Lisbon": "Lisbon: 21 °C, clear",
        "Paris": "Paris: 21 °C, clear",
        "Tokyo": "Tokyo: 21 °C, clear",
    }
    assert len({a["run_id"] for a in answers.values()}) == 3
    assert all(a["tools"] == ["get_weather: ok"] and a["steps"] == 2 for a in answers.values())


async def test_fastapi_service_maps_a_router_failure_to_502(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    import httpx

    service = load("fastapi_service")
    async with (
        FakeFluxRouter([error(400, "bad request")]) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        service.app.state.agent = Agent(client=client, tools=service.tools)
        transport = httpx.ASGITransport(app=service.app)  # lifespan not run: the agent is ours
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            response = await http.post("/ask", json={"prompt": "hi"})
    assert response.status_code == 502
    assert "BadRequestError" in response.json()["detail"]


# --- the worker --------------------------------------------------------------------------------


def worker_tools(calls: dict[str, int], block_label: anyio.Event | None, idempotent: bool) -> ToolRegistry:
    """The example's tools, counting their calls; `create_label` hangs (a crash point) if asked."""
    tools = ToolRegistry()

    @tools.tool
    async def reserve_stock(order_id: str) -> dict:
        """Reserve."""
        calls["reserve_stock"] += 1
        return {"order_id": order_id, "reserved": True}

    @tools.tool(idempotent=idempotent)
    async def create_label(order_id: str) -> dict:
        """Label."""
        calls["create_label"] += 1
        if block_label is not None:
            block_label.set()
            await anyio.sleep_forever()  # the worker dies here
        return {"order_id": order_id, "label": f"LBL-{order_id}"}

    return tools


@pytest.mark.parametrize("idempotent", [True, False])
async def test_worker_killed_mid_run_resumes_on_restart(tmp_path: Path, idempotent: bool) -> None:
    worker = load("worker")
    jobs = worker.JobDir(tmp_path / "jobs")
    jobs.submit(worker.Job("job-1", "Fulfil order A-9."))
    calls = {"reserve_stock": 0, "create_label": 0}
    async with (
        FakeFluxRouter(worker.scripted_model) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        # first life: killed while create_label runs (after reserve_stock finished)
        in_label = anyio.Event()
        journal = SQLiteJournal(tmp_path / "runs.db")
        agent = Agent(client=client, tools=worker_tools(calls, in_label, idempotent), journal=journal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run_worker, agent, jobs)
            await in_label.wait()
            tg.cancel_scope.cancel()
        journal.close()
        assert [j.id for j in jobs.pending()] == ["job-1"]  # not done: still queued
        assert not (jobs.root / "done" / "job-1.json").exists()

        # second life: same journal file, same job directory
        journal = SQLiteJournal(tmp_path / "runs.db")
        agent = Agent(client=client, tools=worker_tools(calls, None, idempotent), journal=journal)
        await worker.run_worker(agent, jobs)
        journal.close()
    requests = len(router.requests)

    done = json.loads((jobs.root / "done" / "job-1.json").read_text())
    assert jobs.pending() == []
    assert calls["reserve_stock"] == 1  # finished before the crash: never run again
    assert requests == 3  # the first answer came from the journal, not from a new request
    statuses = [t["status"] for t in done["tool_calls"]]
    if idempotent:
        assert calls["create_label"] == 2 and statuses == ["ok", "ok"]
    else:  # not safe to repeat: the model is told the outcome is unknown
        assert calls["create_label"] == 1 and statuses == ["ok", "outcome_unknown"]
    assert done["output"] == "Order A-9: stock reserved, label LBL-A-9 created."


async def test_worker_serves_a_memory_stream_and_survives_a_failed_job() -> None:
    worker = load("worker")

    def model(request: Any) -> Any:
        if "broken" in json.dumps(request.json["messages"]):
            return error(400, "cannot do that")
        return worker.scripted_model(request)

    outcomes: dict[str, Any] = {}

    async def on_result(job: Any, outcome: Any) -> None:
        outcomes[job.id] = outcome

    calls = {"reserve_stock": 0, "create_label": 0}
    send, receive = anyio.create_memory_object_stream(0)
    async with (
        FakeFluxRouter(model) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        agent = Agent(client=client, tools=worker_tools(calls, None, True))  # no journal: runs, never resumes
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: worker.serve(agent, receive, on_result, concurrency=2))
            async with send:
                for i, prompt in enumerate(["Fulfil order A-1.", "broken order B-2", "Fulfil order A-3."]):
                    await send.send(worker.Job(f"j{i}", prompt))
    assert set(outcomes) == {"j0", "j1", "j2"}
    assert type(outcomes["j1"]).__name__ == "BadRequestError"
    assert outcomes["j0"].output.startswith("Order A-1") and outcomes["j2"].output.startswith("Order A-3")
    assert calls == {"reserve_stock": 2, "create_label": 2}


def test_job_ids_cannot_escape_the_job_directory(tmp_path: Path) -> None:
    worker = load("worker")
    with pytest.raises(ValueError, match="job ids"):
        worker.JobDir(tmp_path).submit(worker.Job("../../etc/x", "hi"))


# --- the docs ----------------------------------------------------------------------------------


def test_docs_point_at_examples_that_exist() -> None:
    docs = ROOT / "docs"
    linked = set()
    for page in ("concepts.md", "recipes.md"):
        text = (docs / page).read_text()
        linked |= set(re.findall(r"examples/([a-z_]+\.py)", text))
    assert {"fastapi_service.py", "worker.py", "support_agent.py"} <= linked
    missing = [name for name in linked if not (ROOT / "examples" / name).exists()]
    assert not missing
