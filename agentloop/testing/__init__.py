"""Test your agents offline: a real-HTTP fake FluxRouter, scripted replies, a scripted model.

```python
from agentloop import Agent, FluxClient
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

async with FakeFluxRouter([tool_calls(call("get_weather", {"city": "Lisbon"})), text("Sunny")]) as router:
    async with FluxClient(base_url=router.base_url, api_key="test") as client:
        result = await Agent(client=client, tools=tools).run("Weather in Lisbon?")
    assert router.requests[1].json["messages"][-1]["role"] == "tool"
```

Without HTTP: `TestModel()` calls every tool with arguments generated from its schema and then
answers; `FunctionModel(fn)` answers with `fn(messages, tools)`; `ScriptedModel` plays replies.

With pytest, the `fake_router` fixture (registered by agentloop's pytest plugin) gives a
started router with an empty script; `flux_client` gives a client pointed at it.
"""

from agentloop.testing._replies import (
    Reply,
    ScriptedCall,
    ScriptedThinking,
    call,
    drop,
    drop_after,
    error,
    raw,
    redacted_thinking,
    stream_error,
    text,
    thinking,
    tool_calls,
)
from agentloop.testing._scripted import ScriptedModel
from agentloop.testing._server import FakeFluxRouter, RecordedRequest
from agentloop.testing._testmodel import FunctionModel, TestModel, generate_arguments
from agentloop.testing._weather import weather_handler

__all__ = [
    "FakeFluxRouter",
    "RecordedRequest",
    "ScriptedModel",
    "TestModel",
    "FunctionModel",
    "generate_arguments",
    "Reply",
    "ScriptedCall",
    "ScriptedThinking",
    "call",
    "text",
    "tool_calls",
    "thinking",
    "redacted_thinking",
    "error",
    "raw",
    "drop",
    "drop_after",
    "stream_error",
    "weather_handler",
]
