"""Run inspector: how long one page of the runs list takes over a journal of 100,000 runs,
and (`--calls N`) one page of a single run of N tool calls.

    .venv/bin/python benchmarks/bench_ui.py [--runs 100000] [--repeat 20]
    .venv/bin/python benchmarks/bench_ui.py --calls 100000 [--repeat 5]

The journal is generated straight into SQLite in the journal's format (two entries per run:
a model answer and its end), then indexed by opening it with SQLiteJournal as a worker would.
Pages are requested through the real ASGI app (httpx's ASGI transport): the time includes the
query, the per-page counts and the HTML. Goal: <= 200 ms per page, and per live update (an open
runs list asks for its page again every 2 s; an unchanged one answers 204).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import tempfile
import time

import anyio
import httpx

from agentloop import SQLiteJournal, _json
from agentloop.ui import create_app

STATUSES = ["final"] * 85 + ["paused"] * 5 + ["running"] * 4 + ["failed"] * 4 + ["max_steps"] * 2


def generate(path: str, n: int) -> None:
    SQLiteJournal(path).list_runs_sync()  # creates the schema and its indexes
    conn = sqlite3.connect(path)
    t0 = 1_700_000_000.0
    runs, entries = [], []
    for i in range(n):
        rid = f"run-{i:06d}"
        at = t0 + i * 3.7
        status = STATUSES[i % len(STATUSES)]
        header = {
            "model": "flux-auto",
            "messages": [{"role": "user", "content": f"order {i}: what is the status?"}],
        }
        runs.append((rid, status, "flux-auto", 1, at, at + 1.2, _json.dumps_str(header)))
        msg = {
            "message": {"role": "assistant", "content": f"order {i} shipped"},
            "usage": {"requests": 1, "prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
        }
        entries.append((rid, 1, "model", 1, None, _json.dumps(msg), at + 1.1))
        if status == "final":
            entries.append(
                (
                    rid,
                    2,
                    "end",
                    1,
                    None,
                    _json.dumps({"stop_reason": "final", "output": f"order {i} shipped"}),
                    at + 1.2,
                )
            )
    conn.executemany("INSERT INTO agentloop_runs VALUES (?, ?, ?, ?, ?, ?, ?)", runs)
    conn.executemany("INSERT INTO agentloop_entries VALUES (?, ?, ?, ?, ?, ?, ?)", entries)
    conn.commit()
    conn.close()


async def measure(path: str, repeat: int) -> None:
    app = create_app(path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        first = await c.get("/")

        older = re.search(r'<a href="([^"]+)" id="older">', first.text).group(1).replace("&amp;", "&")
        list_version = first.headers.get("x-agentloop-version") or re.search(
            r'id="runs" data-src="[^"]+" data-version="([^"]+)"', first.text
        ).group(1)
        run = await c.get("/runs/run-050000?partial=1")
        run_version = run.headers["x-agentloop-version"]
        cases = {
            "first page": "/",
            "second page (cursor)": older,
            "deep page (cursor ~ run 500)": "/?after=1700001850.0:run-000500",
            "status=failed": "/?status=failed",
            "status=paused, deep": "/?status=paused&after=1700001850.0:run-000500",
            "search 'order 99999' (full scan)": "/?q=order+99999",
            "live search update, nothing moved (204)": "/?q=order+99999&partial=1&since=MARKER",
            "run page": "/runs/run-050000",
            # what each open page asks every 2 s (the list) or 0.7 s (a live run)
            "live list update, nothing moved (204)": f"/?partial=1&since={list_version}",
            "live list update, body sent": "/?partial=1&since=stale",
            "live run update, nothing moved (204)": f"/runs/run-050000?partial=1&since={run_version}",
        }
        search = await c.get("/?q=order+99999")
        marker = re.search(r'id="runs" data-src="[^"]+" data-version="([^"]+)"', search.text).group(1)
        for name, url in cases.items():
            url = url.replace("MARKER", marker)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code in (200, 204), (url, r.status_code)
            print(f"{name:40s} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")


def generate_run(path: str, calls: int, per_step: int = 4) -> None:
    """One run "big" of `calls` tool calls, `per_step` per model answer (each call: start, outcome)."""
    SQLiteJournal(path).list_runs_sync()
    conn = sqlite3.connect(path)
    header = {"model": "flux-auto", "messages": [{"role": "user", "content": "process the backlog"}]}
    usage = {"requests": 1, "prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
    rows, seq, at = [], 0, 1_700_000_000.0
    steps = calls // per_step
    for s in range(1, steps + 1):
        ids = [f"c{s}-{k}" for k in range(per_step)]
        fn = {"name": "lookup", "arguments": '{"order": 1}'}
        message = {"role": "assistant", "content": None, "tool_calls": [{"id": i, "type": "function", "function": fn} for i in ids]}  # fmt: skip
        seq, at = seq + 1, at + 0.5
        rows.append(("big", seq, "model", s, None, _json.dumps({"message": message, "usage": usage}), at))
        for i in ids:
            seq += 1
            rows.append(
                ("big", seq, "tool_start", s, i, _json.dumps({"name": "lookup", "arguments": {}}), at)
            )
        for i in ids:
            seq, at = seq + 1, at + 0.01
            end = {"name": "lookup", "status": "ok", "content": "shipped " + "x" * 150, "duration_s": 0.01}
            rows.append(("big", seq, "tool_end", s, i, _json.dumps(end), at))
    rows.append(
        ("big", seq + 1, "end", steps, None, _json.dumps({"stop_reason": "final", "output": "ok"}), at)
    )
    conn.execute(
        "INSERT INTO agentloop_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("big", "final", "flux-auto", steps, 1_700_000_000.0, at, _json.dumps_str(header)),
    )
    conn.executemany("INSERT INTO agentloop_entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


async def measure_run(path: str, calls: int, repeat: int) -> None:
    """A run's pages: the first load (which counts the run once), then any page, and a live poll."""
    app = create_app(path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        t = time.perf_counter()
        first = await c.get("/runs/big?page=1")
        print(f"{'first load (counts the run once)':40s} {(time.perf_counter() - t) * 1000:7.1f} ms   {len(first.content) / 1e3:7.0f} KB")  # fmt: skip
        version = first.headers.get("x-agentloop-version") or (await c.get("/runs/big?page=1&partial=1")).headers["x-agentloop-version"]  # fmt: skip
        cases = {
            "page 1": "/runs/big?page=1",
            "a middle page": f"/runs/big?page={max(1, calls * 9 // 4 // 300 // 2)}",  # 300 entries a page
            "latest page (no page number)": "/runs/big",
            "live update, nothing moved (204)": f"/runs/big?page=1&partial=1&since={version}",
        }
        for name, url in cases.items():
            times, size = [], 0
            for _ in range(repeat):
                t = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - t) * 1000)
                size = len(r.content)
            print(f"{name:40s} median {statistics.median(times):7.1f} ms   {size / 1e3:7.0f} KB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=0, help="measure one run of this many calls instead")
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "runs.db")
        if args.calls:
            generate_run(path, args.calls)
            anyio.run(measure_run, path, args.calls, args.repeat)
            return
        t = time.perf_counter()
        generate(path, args.runs)
        print(
            f"generated {args.runs} runs in {time.perf_counter() - t:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)"
        )
        anyio.run(measure, path, args.repeat)


if __name__ == "__main__":
    main()
