"""Many crashes: durable runs killed with SIGKILL at random checkpoints and random moments.

The big version of tests/test_crash_resume.py (which hits every crash window once per suite
run): each trial kills the worker 1-4 times, each kill either at a random named checkpoint
(random point, step and occurrence) or from outside after a random event of the run (counted
on a measured whole run, in lockstep with the worker) and a random part of the measured time to
the next event, then resumes to the end; every trial is checked exactly
by tests/crash_harness.py. Reports the kills by window, where the outside kills landed, and the
outcomes.

    .venv/bin/python benchmarks/crash_soak.py --kills 500
    .venv/bin/python benchmarks/crash_soak.py --kills 200 --seed 7 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import crash_harness as harness


def random_spec(rng: random.Random) -> str:
    point = rng.choice(harness.kill_points())
    if point.endswith(".end"):
        step = harness.STEPS + 1
    elif ".model" in point or point == "model.request":
        step = rng.randint(1, harness.STEPS + 1)
    else:  # a tool call's checkpoint: the final step has none
        step = rng.randint(1, harness.STEPS)
    nth = rng.choice([1, 1, 1, 2])
    return f"{point}@{step}#{nth}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=500, help="stop after this many SIGKILLs")
    p.add_argument("--outside", type=float, default=0.4, help="share of kills from outside")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    started = time.perf_counter()
    windows: Counter[str] = Counter()
    missed = 0  # self-kill specs the run never reached (e.g. step 6 has no tool calls)
    outside: list[
        tuple[float, int | None]
    ] = []  # (event picked / events of a whole run, journal writes done)
    outcomes: Counter[str] = Counter()
    kills = trials = 0
    with tempfile.TemporaryDirectory(prefix="crash-soak-") as tmp:
        d = Path(tmp)
        # a whole run per backend: its events and the time from each to the next
        whole = {b: harness.trial(d, f"whole_{b}", b)[0][0] for b in ("asyncio", "trio")}
        gaps = {b: harness.event_gaps(r) for b, r in whole.items()}
        while kills < args.kills:
            trials += 1
            backend = harness.env_backend(trials)
            run_id = f"t{trials}"
            journal, effects = d / "runs.db", d / f"{run_id}.effects"
            code = harness.KILLED
            for _ in range(rng.randint(1, 4)):
                if rng.random() < args.outside:  # after a random event, a random part of its gap later
                    k = rng.randrange(len(gaps[backend]))
                    at = (k, rng.random() * gaps[backend][k])
                    r = harness.run_attempt(journal, effects, run_id, backend, kill_at=at)
                    outside.append((k / len(gaps[backend]), r.appends if r.code == harness.KILLED else None))
                else:
                    spec = random_spec(rng)
                    r = harness.run_attempt(journal, effects, run_id, backend, kill=spec)
                    if r.code == harness.KILLED:
                        windows[spec.split("@")[0]] += 1
                    else:
                        missed += 1
                code = r.code
                kills += code == harness.KILLED
                if code == 0:
                    break
            if code != 0:
                harness.run_attempt(journal, effects, run_id, backend)
            try:
                summary = harness.check(journal, effects, run_id)
            except AssertionError as e:
                print(f"FAILED: seed {seed}, trial {trials} ({run_id}): {e}")
                return 1
            outcomes.update({k: summary[k] for k in ("ok", "outcome_unknown")})
    wall = time.perf_counter() - started
    landed = [u for u, n in outside if n is not None]
    deciles = Counter(min(int(u * 10), 9) for u in landed)
    report = {
        "seed": seed,
        "trials": trials,
        "kills": kills,
        "self_kills_by_window": dict(sorted(windows.items())),
        "self_kill_specs_not_reached": missed,
        "whole_run": {b: f"{len(r.events)} events in {r.events[-1][0]:.3f} s" for b, r in whole.items()},
        "outside_kills": len(landed),
        "outside_finished_first": sum(n is None for _, n in outside),
        "outside_kills_by_decile_of_run": [deciles[i] for i in range(10)],
        "outside_kills_by_journal_writes_done": dict(
            sorted(Counter(n for _, n in outside if n is not None).items())
        ),
        "outcomes": dict(outcomes),
        "wall_s": round(wall, 1),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print(f"{k}: {v}")
        print("clean: every trial passed the check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
