"""How long `import agentloop` takes against `import httpx`, in fresh interpreters.

Issue #19's target: `import agentloop` within 0.05 s of `import httpx` on the same interpreter.
Each trial is a fresh process (import caches are per process); the statements are interleaved
trial by trial so that the machine's load hits them alike, and the table gives medians:

- `import`: `time.perf_counter()` around the statement inside the child (imports only);
- `import CPU`: the child's CPU time over the same statement: on a machine shared with other jobs
  the wall time waits for a core, the CPU time much less (read this one when the load average
  is above the number of cores);
- `process`: the child's whole wall time, interpreter start included, as a user's script pays it.

Bytecode caches are written once first (a warm-up import with `PYTHONDONTWRITEBYTECODE` unset):
an installed package has its `.pyc` files, a checkout under `PYTHONDONTWRITEBYTECODE=1` does not,
and compiling ~50 modules from source would triple the figure.

    .venv/bin/python benchmarks/bench_import.py                 # 15 trials
    .venv/bin/python benchmarks/bench_import.py --trials 31 --importtime 25

`--importtime N` also lists the N modules with the largest cumulative time under
`python -X importtime -c "import agentloop"` (one run: shares, not figures), and every line
says which heavy optional modules a bare `import agentloop` loaded (there should be none; the
test suite checks it structurally in tests/test_import_cost.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "python -c pass": "pass",
    "import httpx": "import httpx",
    "import agentloop": "import agentloop",
    "from agentloop import Agent, FluxClient, ToolRegistry": "from agentloop import Agent, FluxClient, ToolRegistry",
    "import agentloop + SQLiteJournal": "import agentloop; agentloop.SQLiteJournal",
}
# imported by `import agentloop` only when the feature is used (the test's list is the reference)
HEAVY = ("jsonschema", "referencing", "sqlite3", "aiohttp", "structlog", "opentelemetry", "temporalio", "mcp")
_CHILD = """
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
{stmt}
t1, c1 = time.perf_counter() - t0, time.process_time() - c0
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"import": t1, "cpu": c1, "heavy": heavy, "modules": len(sys.modules)}}))
"""


def child_env(cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    if cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def trial(stmt: str) -> dict[str, object]:
    code = _CHILD.format(stmt=stmt, heavy=HEAVY)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env(False)
    )
    wall = time.perf_counter() - t0
    result: dict[str, object] = json.loads(out.stdout)
    result["process"] = wall
    return result


def importtime(top: int) -> None:
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import agentloop"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines()[1:]:
        self_us, cum_us, name = line.removeprefix("import time:").split("|")
        rows.append((int(cum_us), int(self_us), name))
    print(f"\n`python -X importtime -c 'import agentloop'`: the {top} largest cumulative (µs)\n")
    print("| module | cumulative µs | self µs |\n|---|---:|---:|")
    for cum, own, name in sorted(rows, reverse=True)[:top]:
        print(f"| `{name.strip()}` | {cum:,} | {own:,} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--importtime", type=int, default=0, metavar="N")
    args = ap.parse_args()
    # write the bytecode caches once, as an install would have
    subprocess.run(
        [sys.executable, "-c", "import agentloop, agentloop.testing; agentloop.SQLiteJournal"],
        check=True,
        env=child_env(True),
    )
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in STATEMENTS}
    for _ in range(args.trials):
        for name, stmt in STATEMENTS.items():
            runs[name].append(trial(stmt))
    load = os.getloadavg()
    print(f"{args.trials} fresh processes each, interleaved; medians, ms; Python {sys.version.split()[0]};")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (over 1 / 5 / 15 min)\n")
    print(
        "| statement | import ms | import CPU ms | process ms | vs `import httpx`: wall / CPU ms "
        "| modules | heavy optional modules loaded |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")

    def med(rs: list[dict[str, object]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rs)  # type: ignore[arg-type]

    base, base_cpu = med(runs["import httpx"], "import"), med(runs["import httpx"], "cpu")
    for name, rs in runs.items():
        imp, cpu, proc = med(rs, "import"), med(rs, "cpu"), med(rs, "process")
        heavy = ", ".join(rs[-1]["heavy"]) or "none"  # type: ignore[arg-type]
        delta = ""
        if name not in ("python -c pass", "import httpx"):
            delta = f"{(imp - base) * 1000:+.1f} / {(cpu - base_cpu) * 1000:+.1f}"
        row = f"| `{name}` | {imp * 1000:.1f} | {cpu * 1000:.1f} | {proc * 1000:.1f} | {delta}"
        print(f"{row} | {rs[-1]['modules']} | {heavy} |")
    if args.importtime:
        importtime(args.importtime)


if __name__ == "__main__":
    main()
