"""Run inspector: how long one page of the runs list takes over a journal of 100,000 runs.

    .venv/bin/python benchmarks/bench_ui.py [--runs 100000] [--repeat 20]

The journal is generated straight into SQLite in the journal's format (two entries per run:
a model answer and its end), then indexed by opening it with SQLiteJournal as a worker would.
Pages are requested through the real ASGI app (httpx's ASGI transport): the time includes the
query, the per-page counts and the HTML. Goal: <= 200 ms per page, and per live update (an open
runs list asks for its page again every 2 s; an unchanged one answers 204).
"""

from __future__ import annotations

import argparse
import os
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
        import re

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
            "run page": "/runs/run-050000",
            # what each open page asks every 2 s (the list) or 0.7 s (a live run)
            "live list update, nothing moved (204)": f"/?partial=1&since={list_version}",
            "live list update, body sent": "/?partial=1&since=stale",
            "live run update, nothing moved (204)": f"/runs/run-050000?partial=1&since={run_version}",
        }
        for name, url in cases.items():
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code in (200, 204), (url, r.status_code)
            print(f"{name:40s} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "runs.db")
        t = time.perf_counter()
        generate(path, args.runs)
        print(
            f"generated {args.runs} runs in {time.perf_counter() - t:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)"
        )
        anyio.run(measure, path, args.repeat)


if __name__ == "__main__":
    main()
