"""Two runs side by side: the rows of the compare page, each marked when the two sides differ."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest

from ._view import RunView, clip, status_label

__all__ = ["Row", "compare_runs"]


@dataclass(frozen=True)
class Row:
    label: str
    left: str
    right: str
    section: bool = False  # a heading row

    @property
    def differs(self) -> bool:
        return not self.section and self.left != self.right


def _output(v: RunView) -> str:
    for m in reversed(v.chat):
        if m["role"] == "assistant" and m["content"]:
            return str(m["content"])
    return ""


def compare_runs(a: RunView, b: RunView) -> list[Row]:
    sa, sb = a.summary, b.summary
    rows = [
        Row("summary", "", "", section=True),
        Row("model", str(sa.model), str(sb.model)),
        Row("status", status_label(sa.status, sa.live), status_label(sb.status, sb.live)),
        Row("steps", str(sa.steps), str(sb.steps)),
        Row("tool calls", str(sa.tool_calls), str(sb.tool_calls)),
        Row("tokens", str(a.usage["total_tokens"]), str(b.usage["total_tokens"])),
        Row("prompt", clip(sa.prompt or ""), clip(sb.prompt or "")),
        Row("final output", _output(a), _output(b)),
    ]
    for sta, stb in zip_longest(a.steps, b.steps):
        n = (sta or stb).n
        rows.append(Row(f"step {n}", "", "", section=True))
        rows.append(
            Row("model said", (sta.content or "") if sta else "—", (stb.content or "") if stb else "—")
        )
        calls_a = sta.calls if sta else []
        calls_b = stb.calls if stb else []
        for i, (ca, cb) in enumerate(zip_longest(calls_a, calls_b), 1):
            left = f"{ca.name}({ca.arguments}) → {ca.status}: {ca.content or ''}" if ca else "—"
            right = f"{cb.name}({cb.arguments}) → {cb.status}: {cb.content or ''}" if cb else "—"
            rows.append(Row(f"call {i}", left, right))
    return rows
