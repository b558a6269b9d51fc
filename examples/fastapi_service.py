"""Embedding agentloop in a FastAPI service: one FluxClient for the whole app, one Agent, POST /ask.

The client (its connection pool) is created once in the app's lifespan and closed at shutdown;
every request runs the same `Agent`, which holds configuration only and is safe for any number
of concurrent runs. Offline (FLUX_API_KEY unset) the lifespan also starts the built-in fake
FluxRouter on 127.0.0.1 and points the client at it.

    pip install fastapi uvicorn
    python examples/fastapi_service.py            # one request in-process, printed (offline)
    python examples/fastapi_service.py serve      # uvicorn on http://127.0.0.1:8000
    curl -s localhost:8000/ask -H 'content-type: application/json' -d '{"prompt": "Weather in Paris?"}'
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from agentloop import Agent, APIError, FluxClient, RunLimitExceeded, RunLimits, ToolRegistry

tools = ToolRegistry()


@tools.tool
async def get_weather(city: str) -> dict:
    """Get the current weather for a city.

    Args:
        city: City name
    """
    return {"city": city, "temp_c": 21, "sky": "clear"}  # your real function here


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter, weather_handler

            router = await stack.enter_async_context(FakeFluxRouter(weather_handler))
            client = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        # Budgets per request: a web request must not run (or spend) without bound.
        app.state.agent = Agent(
            client=client, tools=tools, model="flux-auto", limits=RunLimits(max_steps=6, timeout=60)
        )
        yield  # the app serves requests here; the client closes after the last one


app = FastAPI(title="agentloop service", lifespan=lifespan)


class Ask(BaseModel):
    prompt: str = Field(min_length=1, max_length=8_000)


class Answer(BaseModel):
    output: str
    run_id: str
    steps: int
    total_tokens: int
    tools: list[str]  # "name: outcome" per tool call


@app.post("/ask")
async def ask(body: Ask, request: Request) -> Answer:
    agent: Agent = request.app.state.agent
    try:
        result = await agent.run(body.prompt)
    except RunLimitExceeded as e:  # the model did not finish within the budget
        raise HTTPException(
            status_code=422, detail=f"{type(e).__name__}: the agent gave no answer in time"
        ) from e
    except APIError as e:  # the router failed (after agentloop's retries)
        raise HTTPException(status_code=502, detail=f"model endpoint failed: {type(e).__name__}") from e
    return Answer(
        output=result.output or "",
        run_id=result.run_id,
        steps=result.steps,
        total_tokens=result.usage.total_tokens,
        tools=[f"{r.name}: {r.status}" for r in result.tool_calls],
    )


async def main(prompt: str = "What's the weather in Lisbon and Paris?") -> dict:
    """One request through the whole app in-process (lifespan included): no server, no network."""
    import httpx

    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            response = await http.post("/ask", json={"prompt": prompt})
    response.raise_for_status()
    print(response.json())
    return response.json()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=8000)
    else:
        anyio.run(main)
