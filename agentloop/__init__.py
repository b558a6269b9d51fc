"""agentloop: an asynchronous tool-execution agent runtime for FluxRouter.

```python
from agentloop import Agent, FluxClient, ToolRegistry

tools = ToolRegistry()

@tools.tool
async def get_weather(city: str) -> dict:
    \"\"\"Get the current weather for a city.\"\"\"
    return {"city": city, "temp_c": 21}

async with FluxClient() as client:
    agent = Agent(client=client, tools=tools, model="flux-auto")
    result = await agent.run("What's the weather in Lisbon?")
```
"""

from ._agent import Agent, ToolChoice
from ._client import DEFAULT_BASE_URL, FluxClient
from ._events import (
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from ._exceptions import (
    AgentloopError,
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConversationError,
    InternalServerError,
    RateLimitError,
    RunError,
    RunLimitExceeded,
    SandboxUnavailableError,
    StepLimitExceeded,
    ToolDefinitionError,
    ToolsNotSupportedError,
)
from ._limits import Limits
from ._model import Model, ModelRequest
from ._retry import RetryPolicy
from ._tools import SandboxMode, Tool, ToolRegistry
from ._types import ModelTurn, OutcomeStatus, RunResult, ToolCallRecord, Usage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "FluxClient",
    "ToolRegistry",
    "Tool",
    "Limits",
    "SandboxMode",
    "RetryPolicy",
    "RunResult",
    "ToolCallRecord",
    "Usage",
    "OutcomeStatus",
    "ToolChoice",
    "Model",
    "ModelRequest",
    "ModelTurn",
    "DEFAULT_BASE_URL",
    # events
    "Event",
    "RunStarted",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolCallFinished",
    "StepFinished",
    "RunFinished",
    # errors
    "AgentloopError",
    "ConfigurationError",
    "ToolDefinitionError",
    "ConversationError",
    "SandboxUnavailableError",
    "APIError",
    "APIConnectionError",
    "APITimeoutError",
    "APIResponseError",
    "APIStatusError",
    "BadRequestError",
    "ToolsNotSupportedError",
    "AuthenticationError",
    "RateLimitError",
    "InternalServerError",
    "RunError",
    "RunLimitExceeded",
    "StepLimitExceeded",
    "__version__",
]
