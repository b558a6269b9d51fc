"""The tools of `agentloop demo`: the seed's weather example, with canned data (offline)."""

from __future__ import annotations

from typing import Any

from ._tools.registry import ToolRegistry

_WEATHER = {
    "lisbon": (21, "clear"),
    "porto": (17, "light rain"),
    "paris": (12, "overcast"),
    "tokyo": (15, "clear"),
}


def demo_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict[str, Any]:
        """Get the current weather for a city.

        Args:
            city: City name
        """
        temp, sky = _WEATHER.get(city.lower(), (20, "clear"))
        return {"city": city, "temp_c": temp, "sky": sky}

    return tools
