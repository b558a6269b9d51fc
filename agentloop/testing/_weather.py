"""The offline demo's model (`agentloop demo`, the examples): asks `get_weather` for each known city
the user names, then summarises the results. Deterministic, on both wires."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from agentloop.testing import _codec
from agentloop.testing._replies import Reply, call, text, tool_calls

if TYPE_CHECKING:
    from agentloop.testing._server import RecordedRequest

__all__ = ["KNOWN_CITIES", "find_cities", "weather_handler"]


KNOWN_CITIES = (
    "Lisbon", "Porto", "Faro", "Madrid", "Barcelona", "Paris", "London", "Berlin", "Rome",
    "Amsterdam", "New York", "San Francisco", "Tokyo", "Sydney", "Cairo",
)  # fmt: skip
_CITY_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in KNOWN_CITIES) + r")\b", re.IGNORECASE)
_TEMP_KEYS = ("temperature_c", "temp_c", "temperature", "temp", "celsius")
_COND_KEYS = ("conditions", "condition", "summary", "description", "sky", "weather")


def weather_handler(request: RecordedRequest) -> Reply:
    """Deterministic fake model for the demo, on both wires.

    Last message from the user → one parallel `get_weather` call per known city it names (default
    Lisbon). Last message(s) carry tool results → a final text, one "City: 21 °C, clear" line each.
    """
    body = request.json if isinstance(request.json, dict) else {}
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    results = _anthropic_results(messages) if request.wire == "anthropic" else _openai_results(messages)
    if results is not None:
        lines = [_summarise(city, content, is_error) for city, content, is_error in results]
        return text("\n".join(lines) if lines else "I have no weather results to report.")
    last = messages[-1] if messages else {}
    if last.get("role") != "user":
        return text("Ask me about the weather in a city.")
    cities = find_cities(_plain_text(last.get("content"))) or ["Lisbon"]
    return tool_calls(*(call("get_weather", {"city": c}) for c in cities))


def find_cities(s: str) -> list[str]:
    """Known cities named in `s`, in order of first mention, canonical spelling, no repeats."""
    canon = {c.lower(): c for c in KNOWN_CITIES}
    found: list[str] = []
    for m in _CITY_RE.finditer(s):
        city = canon[m.group(1).lower()]
        if city not in found:
            found.append(city)
    return found


def _plain_text(content: Any) -> str:
    """Text of an OpenAI `content` (str or parts) or an Anthropic one (str or blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _city_of(arguments: Any) -> str | None:
    if isinstance(arguments, str):
        try:
            arguments = _codec.loads(arguments)
        except ValueError:
            return None
    city = arguments.get("city") if isinstance(arguments, dict) else None
    return city if isinstance(city, str) else None


Result = tuple[str | None, str, bool]  # (city asked for, result text, is_error)


def _openai_results(messages: list[dict[str, Any]]) -> list[Result] | None:
    """Trailing `role: "tool"` messages paired (by id) with the assistant call that asked."""
    i = len(messages)
    while i > 0 and messages[i - 1].get("role") == "tool":
        i -= 1
    if i == len(messages):
        return None
    asked: dict[str, str | None] = {}
    if i > 0:
        for tc in messages[i - 1].get("tool_calls") or []:
            if isinstance(tc, dict):
                asked[str(tc.get("id"))] = _city_of((tc.get("function") or {}).get("arguments"))
    return [
        (asked.get(str(m.get("tool_call_id"))), _plain_text(m.get("content")), False) for m in messages[i:]
    ]


def _anthropic_results(messages: list[dict[str, Any]]) -> list[Result] | None:
    """`tool_result` blocks of the last user message, paired with the previous `tool_use` blocks."""
    if (
        not messages
        or messages[-1].get("role") != "user"
        or not isinstance(messages[-1].get("content"), list)
    ):
        return None
    blocks = [b for b in messages[-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not blocks:
        return None
    asked: dict[str, str | None] = {}
    for m in messages[:-1]:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    asked[str(b.get("id"))] = _city_of(b.get("input"))
    return [
        (asked.get(str(b.get("tool_use_id"))), _plain_text(b.get("content")), bool(b.get("is_error")))
        for b in blocks
    ]


def _summarise(city: str | None, content: str, is_error: bool) -> str:
    try:
        data = _codec.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict) and city is None and isinstance(data.get("city"), str):
        city = data["city"]
    label = city or "Unknown city"
    if is_error:
        return f"{label}: unavailable ({content.strip()})"
    if isinstance(data, dict):
        temp = next((data[k] for k in _TEMP_KEYS if data.get(k) is not None), None)
        cond = next((data[k] for k in _COND_KEYS if data.get(k)), None)
        parts = []
        if temp is not None:
            parts.append(f"{temp} °C" if isinstance(temp, (int, float)) else str(temp))
        if cond is not None:
            parts.append(str(cond))
        if parts:
            return f"{label}: {', '.join(parts)}"
    return f"{label}: {content.strip()}"
