"""A small flame graph (SVG) from py-spy's collapsed stacks, kept to the part that matters.

    py-spy record --nolineno --format raw -o seq.raw -- .venv/bin/python benchmarks/profile_step.py --mode seq
    python benchmarks/flamegraph.py seq.raw benchmarks/profiles/seq.svg --title "(a) C=1"

py-spy's own SVG holds every sample, imports and warm-up included, and weighs 200-400 KB. This
keeps only the stacks that pass through `--root` (default: the agent's run and stream entry
points, i.e. the steps), starts each at the event loop's callback (`Handle._run`), drops frames
narrower than `--min` percent, and writes a static SVG (hover a box for its title) of a few
tens of KB. The same filtered stacks are printed as "frame: inclusive %" lines for the text.
"""

from __future__ import annotations

import argparse
import html
from collections import Counter

ROOTS = (
    "Agent.run ",
    "EventStream.__anext__ ",
    "Agent._steps ",
    "drive (agentloop/",
    "Steps.until_done ",
)  # _steps: before #16


def load(path: str, roots: tuple[str, ...]) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in open(path, encoding="utf-8"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith(roots) for f in frames):
            continue  # imports, setup, the server's start: not a step
        start = max((i for i, f in enumerate(frames) if f.startswith("Handle._run ")), default=0)
        stacks[tuple(frames[start:])] += int(n)
    return stacks


def tree(stacks: Counter[tuple[str, ...]]) -> dict[str, object]:
    root: dict[str, object] = {"n": 0, "kids": {}}
    for frames, n in stacks.items():
        node = root
        node["n"] = int(node["n"]) + n  # type: ignore[call-overload]
        for f in frames:
            kids: dict[str, dict[str, object]] = node["kids"]  # type: ignore[assignment]
            node = kids.setdefault(f, {"n": 0, "kids": {}})
            node["n"] = int(node["n"]) + n  # type: ignore[call-overload]
    return root


def render(root: dict[str, object], title: str, min_pct: float, width: int = 1200, row: int = 16) -> str:
    total = int(root["n"])  # type: ignore[call-overload]
    boxes: list[str] = []
    depth_max = 0

    def walk(node: dict[str, object], name: str, x: float, depth: int) -> None:
        nonlocal depth_max
        n = int(node["n"])  # type: ignore[call-overload]
        w = width * n / total
        if 100 * n / total < min_pct:
            return
        depth_max = max(depth_max, depth)
        label = html.escape(name)
        pct = f"{100 * n / total:.1f}%"
        hue = 10 + (hash(name.split(" (")[-1]) % 40)
        text = html.escape(name.split(" (")[0])[: int(w / 7)] if w > 30 else ""
        boxes.append(f'<g><title>{label} {pct}</title><rect x="{x:.1f}" y="{{y{depth}}}" width="{w:.1f}" height="{row - 1}" '
                     f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{{t{depth}}}">{text}</text></g>')  # fmt: skip
        for kid_name, kid in sorted(node["kids"].items()):  # type: ignore[attr-defined]
            walk(kid, kid_name, x, depth + 1)
            x += width * int(kid["n"]) / total

    walk(root, f"all steps ({total} samples)", 0.0, 0)
    height = (depth_max + 2) * row + 30
    svg = "\n".join(boxes)
    for d in range(depth_max + 1):  # icicle upside down: the root at the bottom, as flame graphs are
        y = height - (d + 1) * row - 4
        svg = svg.replace(f"{{y{d}}}", str(y)).replace(f"{{t{d}}}", str(y + row - 4))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
            f'font-size="11"><text x="4" y="16" font-size="14">{html.escape(title)}</text>\n{svg}\n</svg>\n')  # fmt: skip


def inclusive(stacks: Counter[tuple[str, ...]], top: int) -> list[tuple[str, float]]:
    total = sum(stacks.values())
    share: Counter[str] = Counter()
    for frames, n in stacks.items():
        for f in set(frames):
            share[f] += n
    return [(f, 100 * n / total) for f, n in share.most_common(top)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("svg")
    p.add_argument("--title", default="")
    p.add_argument("--min", type=float, default=0.5, help="drop frames narrower than this percent")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    stacks = load(args.raw, ROOTS)
    with open(args.svg, "w", encoding="utf-8") as f:
        f.write(render(tree(stacks), args.title, args.min))
    for frame, pct in inclusive(stacks, args.top):
        print(f"{pct:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
