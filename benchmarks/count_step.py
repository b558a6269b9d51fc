"""Machine instructions per agent step, counted by valgrind: a figure the machine's load does not move.

    .venv/bin/python benchmarks/count_step.py --mode seq                 # (a) C=1
    .venv/bin/python benchmarks/count_step.py --mode sseq                # (d) C=1, streamed
    .venv/bin/python benchmarks/count_step.py --mode sseq --plain-server # streamed, no SSE on the wire
    .venv/bin/python benchmarks/count_step.py --mode sseq --checkout /tmp/base   # another checkout's agentloop

Why: on the shared 2-core machine the CPU per step of one `profile_step.py` run moves by ±20 %
with the other jobs, more than most single changes to the hot path. `valgrind --tool=callgrind`
counts the client process's instructions (the server is a child process it does not follow)
for `profile_step.py` at two run counts; their difference over the extra steps is the cost of
one step, imports and warm-up cancelled out (±0.5 % between repeats, `PYTHONHASHSEED=0`).
Instructions are not time: a cache miss or a syscall's kernel side costs no instruction here,
and `re` / `memcpy` loops run many cheap ones, so two different programs' counts do not compare
(`benchmarks/README.md`, "Streaming, seventh pass"). Use it to compare two versions of the same
code; confirm in CPU with the peer harness. ~2-4 min a figure on a quiet machine, 10+ at load 20+.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def instructions(checkout: Path, mode: str, runs: int, plain: bool) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [str(HERE / "profile_step.py"), "--mode", mode, "--runs", str(runs)]
    cmd += ["--plain-server"] if plain else []
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(checkout)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["seq", "sseq", "conc", "sconc"], default="sseq")
    p.add_argument("--checkout", type=Path, default=HERE.parent, help="whose agentloop (default: this one)")
    p.add_argument("--runs", type=int, nargs=2, default=[20, 70], metavar=("FEW", "MORE"))
    p.add_argument("--plain-server", action="store_true", help="see profile_step.py")
    args = p.parse_args()
    few, more = args.runs
    a = instructions(args.checkout, args.mode, few, args.plain_server)
    b = instructions(args.checkout, args.mode, more, args.plain_server)
    steps = (more - few) * 4  # profile_step.py's runs: S=3 tool steps and the final one
    print(
        f"{args.mode}{' (plain server)' if args.plain_server else ''} {args.checkout}: {(b - a) / steps:,.0f} instructions per step"
    )


if __name__ == "__main__":
    main()
