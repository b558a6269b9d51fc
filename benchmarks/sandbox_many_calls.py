"""The long run of tests/test_sandbox_hostile.py::test_parallel_calls_past_the_fd_budget_all_get_an_outcome:
500 sandboxed calls in one model message under `ulimit -n 1024` (the host admits 240 at a time,
the rest queue), in a PID namespace of its own (root and util-linux `unshare`), as the test runs
its smoke size. Every call must end "ok" and the run must finish.

    sudo .venv/bin/python benchmarks/sandbox_many_calls.py [--calls 500] [--nofile 1024] [--mode process]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--mode", default="process", choices=["process", "isolated"])
    args = parser.parse_args()
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(TESTS / "hostile_scenarios.py")]
    argv += ["many_calls", args.mode, str(args.calls), str(args.nofile)]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=TESTS, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(done.stdout.strip().splitlines()[-1])
    ok = (
        out.get("n") == args.calls
        and out.get("output") == "after"
        and out["statuses"].get("ok") == args.calls
    )
    print(
        json.dumps(
            {
                "calls": args.calls,
                "nofile": args.nofile,
                "statuses": out["statuses"],
                "wall_s": round(wall, 1),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
