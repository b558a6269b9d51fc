"""Where a long worker's native memory goes: anonymous RSS per run, split by who holds it.

The mix soak (`soak.py --mix`) sees anonymous RSS grow ~1 KB per run with the journal on while
tracemalloc is flat. This benchmark runs one simple journaled run shape many times (two model
requests, an async and a sync tool) and, every `--every` runs, after `gc.collect()`, records:

- `anon`: RssAnon of /proc/self/status (what the soak reports);
- `sqlite`: `sqlite3_memory_used()` of the process's libsqlite3 (page caches, statements, schema),
  and its high-water mark;
- glibc's `mallinfo2()`: `arena` (bytes from sbrk/mmap'd heaps), `used`, `free` (free chunks
  kept in the arenas), and the number of arenas (`malloc_info`);
- `trimmed`: RssAnon after `malloc_trim(0)` (with `--trim`), i.e. what of the growth is free
  memory glibc kept rather than memory anyone holds;
- `traced`: tracemalloc's figure (with `--trace`).

    .venv/bin/python benchmarks/soak_native.py --runs 20000 --every 2000            # journal on
    .venv/bin/python benchmarks/soak_native.py --runs 20000 --no-journal
    .venv/bin/python benchmarks/soak_native.py --runs 20000 --trim --backend trio
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/soak_native.py --runs 20000
    .venv/bin/python benchmarks/soak_native.py --model http --concurrency 32          # over loopback

`--model function` (default) answers in process (`FunctionModel`), so the figures are the run
loop's, the tools' and the journal's; `--model http` adds a `FluxClient` and the fake router.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from agentloop import Agent, FluxClient, SQLiteJournal
from agentloop.testing import FakeFluxRouter, FunctionModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
from soak import make_tools  # the soak's tools, without its "process" one

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_sqlite = ctypes.CDLL("libsqlite3.so.0")  # the one _sqlite3 links (ldd), loaded once per process
_sqlite.sqlite3_memory_used.restype = ctypes.c_int64
_sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
_sqlite.sqlite3_memory_highwater.argtypes = [ctypes.c_int]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


_libc.mallinfo2.restype = _Mallinfo2
_libc.open_memstream.restype = ctypes.c_void_p
_libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
_libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.fclose.argtypes = [ctypes.c_void_p]


def _arenas() -> int:
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    f = _libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    _libc.malloc_info(0, f)
    _libc.fclose(f)
    xml = ctypes.string_at(buf, size.value).decode()
    _libc.free(buf)
    return len(re.findall(r'<heap nr="\d+">', xml))


def _anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def native_mb() -> dict[str, float]:
    """SQLite's memory and glibc's heap (in use / free in its arenas), MB: the mix soak's columns."""
    mi = _libc.mallinfo2()
    return {
        "sqlite_mb": round(_sqlite.sqlite3_memory_used() / 2**20, 1),
        "malloc_used_mb": round(mi.uordblks / 2**20, 1),
        "malloc_free_mb": round(mi.fordblks / 2**20, 1),
    }


def trimmed_mb() -> float:
    """RssAnon after `malloc_trim(0)`: what of it was free memory glibc kept (the mix soak's
    `SOAK_TRIM=1` column; it changes the process, so it is asked for)."""
    _libc.malloc_trim(0)
    return round(_anon_kb() / 1024, 1)


def sample(runs: int, trim: bool) -> dict[str, Any]:
    gc.collect()
    mi = _libc.mallinfo2()
    out: dict[str, Any] = {
        "runs": runs,
        "anon_kb": _anon_kb(),
        "sqlite_kb": _sqlite.sqlite3_memory_used() // 1024,
        "sqlite_high_kb": _sqlite.sqlite3_memory_highwater(0) // 1024,
        "arena_kb": mi.arena // 1024,
        "used_kb": mi.uordblks // 1024,
        "free_kb": mi.fordblks // 1024,
        "mmap_kb": mi.hblkhd // 1024,
        "arenas": _arenas(),
        "threads": threading.active_count(),
    }
    if tracemalloc.is_tracing():
        out["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
    if trim:
        _libc.malloc_trim(0)
        out["trimmed_kb"] = _anon_kb()
    return out


def answer(messages: list[dict[str, Any]], tools: Any = None) -> Any:
    if messages[-1]["role"] == "tool":
        return text("Lisbon: 21 °C, 12:00")
    return tool_calls(call("get_weather", {"city": "Lisbon"}), call("local_time", {"city": "Lisbon"}))


def handler(request: Any) -> Any:
    return answer(request.json.get("messages") or [{"role": "user"}])


async def soak(args: argparse.Namespace, db: str) -> list[dict[str, Any]]:
    journal = SQLiteJournal(db) if args.journal else None
    tools = make_tools(process=False)
    samples: list[dict[str, Any]] = []
    async with FakeFluxRouter(handler) as router:
        client: Any
        if args.model == "http":
            client = FluxClient(base_url=router.base_url, api_key="soak")
            await client.__aenter__()
        else:
            client = FunctionModel(answer)
        agent = Agent(client=client, tools=tools, journal=journal)
        done = 0

        async def one() -> None:
            nonlocal done
            result = await agent.run("Weather in Lisbon?")
            assert result.output.startswith("Lisbon"), result.output
            done += 1

        t0 = time.monotonic()
        while done < args.runs:
            async with anyio.create_task_group() as tg:
                for _ in range(min(args.concurrency, args.runs - done)):
                    tg.start_soon(one)
            router.requests.clear()  # the fake keeps every request it answered (a test's record)
            if isinstance(client, FunctionModel):
                client.requests.clear()
            if done % args.every < args.concurrency or done == args.runs:
                s = sample(done, args.trim)
                s["s"] = round(time.monotonic() - t0, 1)
                samples.append(s)
                if not args.json:
                    print(json.dumps(s), flush=True)
        if args.model == "http":
            await client.__aexit__(None, None, None)
    if journal is not None:
        journal.close()
        s = sample(done, args.trim)
        s["label"] = "journal closed"
        samples.append(s)
        if not args.json:
            print(json.dumps(s), flush=True)
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20_000)
    p.add_argument("--every", type=int, default=2_000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--model", default="function", choices=["function", "http"])
    p.add_argument("--no-journal", dest="journal", action="store_false")
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) after each sample, then RSS again")
    p.add_argument("--trace", action="store_true", help="tracemalloc on (slower)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.trace:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        samples = anyio.run(soak, args, str(Path(tmp) / "journal.db"), backend=args.backend)
    runs = [s for s in samples if "label" not in s]
    first, last = runs[min(1, len(runs) - 1)], runs[-1]  # the first sample is warm-up
    per_run = (last["anon_kb"] - first["anon_kb"]) * 1024 / max(1, last["runs"] - first["runs"])
    summary = {
        "anon_bytes_per_run_after_warmup": round(per_run, 1),
        "from": first["runs"],
        "to": last["runs"],
    }
    if args.json:
        print(json.dumps({"samples": samples, **summary}))
    else:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
