"""agentloop vs the hand-written httpx loop, side by side, with one command.

    .venv/bin/python benchmarks/run.py            # full matrix, 3 rounds (~3 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # 1 round, smaller R

Self-contained: its own fake server (`_server.py`) and drivers (`_driver.py`); no dependency on
anything outside the repository. The server is pinned to core 0 and each driver process to
core 1 with `taskset` where available. Each measurement is its own process; rounds are
interleaved and the table shows medians. Writes the markdown table to stdout and to
`benchmarks/results/latest.md`. Never part of the test suite: timing is not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
PY = sys.executable
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if PIN else cmd


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(pinned(0, [PY, str(HERE / "_server.py")]), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    return proc, url


def drive(url: str, driver: str, **params: object) -> dict:
    cmd = [PY, str(HERE / "_driver.py"), "--driver", driver, "--url", url]
    for k, v in params.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        else:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(pinned(1, cmd), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def import_time(module: str, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


SCENARIOS = {
    "a": ("(a) sequential: R=200 C=1 S=3 K=4", dict(runs=200, concurrency=1, steps=3, tools=4)),
    "b": ("(b) concurrency: R=1000 C=200 S=3 K=4", dict(runs=1000, concurrency=200, steps=3, tools=4)),
    "c": (
        "(c) parallel tools: R=20 C=1 S=2 K=8 T=50 ms",
        dict(runs=20, concurrency=1, steps=2, tools=8, sleep_ms=50),
    ),
    "h10": (
        "history 10 messages: R=100 C=1 S=3 K=4",
        dict(runs=100, concurrency=1, steps=3, tools=4, history=10),
    ),
    "h100": (
        "history 100 messages: R=100 C=1 S=3 K=4",
        dict(runs=100, concurrency=1, steps=3, tools=4, history=100),
    ),
    "h1000": (
        "history 1,000 messages: R=100 C=1 S=3 K=4",
        dict(runs=100, concurrency=1, steps=3, tools=4, history=1000),
    ),
}
DRIVERS = ("raw_httpx", "agentloop")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 round, R divided by 4")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--hold", type=int, default=10_000, help="runs waiting on a slow model for the memory test (0: skip)"
    )
    args = p.parse_args()
    rounds = 1 if args.quick else args.rounds
    chosen = [s for s in args.scenarios.split(",") if s]
    server, url = start_server()
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for r in range(rounds):
            for key in chosen:
                _title, params = SCENARIOS[key]
                params = dict(params)
                if args.quick:
                    params["runs"] = max(params["runs"] // 4, 10)
                for d in DRIVERS:
                    m = drive(url, d, **params)
                    ok = m["errors"] == 0 and m["requests"] == m["expected_requests"]
                    print(
                        f"[round {r + 1}/{rounds}] {key:6} {d:10} cpu {m['cpu_ms_per_step']:.3f} ms/step "
                        f"{m['steps_per_s']:8.1f} steps/s {'ok' if ok else 'FAILED'}",
                        file=sys.stderr,
                    )
                    if ok:
                        results.setdefault((key, d), []).append(m)
        hold = {}
        for d in DRIVERS if args.hold else ():
            try:
                hold[d] = drive(
                    url,
                    d,
                    runs=args.hold,
                    concurrency=args.hold,
                    steps=1,
                    tools=1,
                    latency_ms=15_000,
                    hold=True,
                )
            except subprocess.CalledProcessError as e:  # e.g. a pool that cannot open that many connections
                print(f"memory test failed for {d}: {e.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    imports = {m: import_time(m) for m in ("httpx", "agentloop")}
    table = render(results, chosen, hold, imports, rounds)
    print(table)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(table)


def med(ms: list[dict], field: str) -> float:
    return statistics.median(m[field] for m in ms)


def render(results: dict, chosen: list[str], hold: dict, imports: dict, rounds: int) -> str:
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · server on core 0, drivers on core 1: {PIN} · medians of {rounds} round(s)",
        "",
    ]
    for key in chosen:
        title = SCENARIOS[key][0]
        base = results.get((key, "raw_httpx"))
        lines += [
            f"#### {title}",
            "",
            "| driver | steps/s | CPU ms/step | × raw_httpx CPU | overhead ms/step | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for d in DRIVERS:
            ms = results.get((key, d))
            if not ms:
                lines.append(f"| {d} | failed | | | | |")
                continue
            ratio = med(ms, "cpu_ms_per_step") / med(base, "cpu_ms_per_step") if base else float("nan")
            lines.append(
                f"| {d} | {med(ms, 'steps_per_s'):,.0f} | {med(ms, 'cpu_ms_per_step'):.3f} | {ratio:.2f}× | "
                f"{med(ms, 'overhead_ms_per_step'):.3f} | {med(ms, 'peak_rss_mb'):.0f} |"
            )
        lines.append("")
    if hold:
        lines += [
            "#### memory per run: runs waiting on a slow model at once",
            "",
            "| driver | runs | RSS before MB | RSS with all waiting MB | KB per run |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {d} | {h['runs']:,} | {h['rss_base_mb']:.1f} | {h['rss_waiting_mb']:.1f} | {h['kb_per_run']:.1f} |"
            for d, h in hold.items()
        ]
        lines.append("")
    lines += ["#### start-up", "", "| module | interpreter + import, s (median of 5) |", "|---|---:|"]
    lines += [f"| {m} | {t:.3f} |" for m, t in imports.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
