"""Break durability on purpose, one way at a time, and show that the crash tests catch each.

For every mutation below: copy the package and the tests to a temporary directory, patch the
copy's source (the checkout is never touched, and no hook is left in the product), run the
durability tests against the copy, and report which tests failed. A mutation that no test
catches is a hole in the tests; the unmutated copy must pass.

    .venv/bin/python benchmarks/mutate_journal.py                  # every mutation, every test
    .venv/bin/python benchmarks/mutate_journal.py --only M1 M3     # some of them
    .venv/bin/python benchmarks/mutate_journal.py --maxfail 3      # stop each run early
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_crash_resume.py", "tests/test_journal.py"]


@dataclass(frozen=True)
class Mutation:
    key: str
    what: str
    patches: tuple[tuple[str, str, str], ...]  # (file, old text, new text); old must occur exactly once


MUTATIONS = [
    Mutation("M0", "no mutation (the copy must pass)", ()),
    Mutation(
        "M1",
        "the `end` entry is never written on resume (final answer committed, `end` missing)",
        (("agentloop/_run/loop.py", "if not run.ended:", "if False:"),),
    ),
    Mutation(
        "M2",
        "a call whose start was never journaled is reported outcome_unknown on resume (lost execution)",
        (
            (
                "agentloop/_run/calls.py",
                "self.started = resume.started if resume is not None else frozenset()",
                "self.started = type('All', (), {'__contains__': lambda s, k: True})() if resume is not None else frozenset()",
            ),
        ),
    ),
    Mutation(
        "M3",
        "tool outcomes are committed in one batch at step end",
        (
            (
                "agentloop/_run/state.py",
                "        self.step_records[record.id] = record\n        if self.recorder.journal is not None:  #"
                " no coroutine per call when there is nothing to commit\n            await self.recorder.call_settled(record)\n",
                "        self.step_records[record.id] = record\n        self.unflushed.append(record)\n\n"
                "    async def flush(self) -> None:\n        batch, self.unflushed = self.unflushed, []\n"
                "        for record in batch:\n            if self.recorder.journal is not None:\n"
                "                await self.recorder.call_settled(record)\n",
            ),
            ("agentloop/_run/state.py", '        "ended",\n', '        "ended",\n        "unflushed",\n'),
            (
                "agentloop/_run/state.py",
                "        self.ended = True  #",
                "        self.unflushed = []\n        self.ended = True  #",
            ),
            (
                "agentloop/_run/calls.py",
                "            await self.dispatcher.run(t.to_run, step)  #",
                "            await self.dispatcher.run(t.to_run, step)\n        await run.flush()  #",
            ),
        ),
    ),
    Mutation(
        "M4",
        "a call's outcome is committed before the call runs",
        (
            (
                "agentloop/_tools/dispatch.py",
                "        try:\n            status, content, error = await self._execute(record, raw)",
                "        try:\n            if self.on_finish is not None:\n                await self.on_finish(record)\n"
                "            status, content, error = await self._execute(record, raw)",
            ),
            (
                "agentloop/_tools/dispatch.py",
                "        if self.on_finish is not None:\n            await self.on_finish(record)\n        if self.log",
                "        if self.log",
            ),
        ),
    ),
    Mutation(
        "M5",
        "a call's start is journaled after the tool ran, not before",
        (
            (
                "agentloop/_tools/dispatch.py",
                "        if self.limiter is None:\n            if self.on_invoke is not None:\n                await self.on_invoke(record)\n"
                "            return await self._invoke(tool, args, checked.kwargs, record)",
                "        if self.limiter is None:\n            outcome = await self._invoke(tool, args, checked.kwargs, record)\n"
                "            if self.on_invoke is not None:\n                await self.on_invoke(record)\n            return outcome",
            ),
        ),
    ),
    Mutation(
        "M6",
        "an outcome is journaled under the wrong call id (the step's first call)",
        (
            (
                "agentloop/_run/state.py",
                "            await self.recorder.call_settled(record)\n",
                "            await self.recorder.call_settled(__import__('dataclasses').replace("
                "record, id=(self.step_calls or [{'id': record.id}])[0]['id']))\n",
            ),
        ),
    ),
    Mutation(
        "M7",
        "resume forgets the finished calls of the interrupted step (re-runs finished non-idempotent calls)",
        (
            (
                "agentloop/_run/state.py",
                "run.resume = Resume(state.calls, state.records, state.started, {})",
                "run.resume = Resume(state.calls, {}, state.started, {})",
            ),
        ),
    ),
    Mutation(
        "M8",
        "replay forgets which calls had started (re-runs an interrupted non-idempotent call)",
        (
            (
                "agentloop/_run/recorder.py",
                "    r.started.add(_call_id(e))",
                "    pass",
            ),
        ),
    ),
    Mutation(
        "M9",
        "an interrupted idempotent call is not run again (outcome_unknown for every tool)",
        (
            (
                "agentloop/_run/calls.py",
                "if cid in t.started and not self._idempotent(name):",
                "if cid in t.started:",
            ),
        ),
    ),
    Mutation(
        "M10",
        "a journal write is two transactions (the entry, then the run's status): not atomic",
        (
            (
                "agentloop/_run/sqlite.py",
                "                (run_id, run_id, kind, step, call_id, data, now),\n            )\n",
                "                (run_id, run_id, kind, step, call_id, data, now),\n            )\n"
                '            conn.execute("COMMIT")\n            conn.execute("BEGIN IMMEDIATE")\n',
            ),
        ),
    ),
    Mutation(
        "M11",
        "a step's close is missing: the outcome of a step's last call to finish is not committed",
        (
            (
                "agentloop/_run/state.py",
                "        if self.recorder.journal is not None:  #",
                "        if self.recorder.journal is not None and len(self.step_records) < len(self.step_calls or ()):  #",
            ),
        ),
    ),
    Mutation(
        "M12",
        "replay does not see a committed final answer whose `end` is missing (asks the model again)",
        (("agentloop/_run/recorder.py", '        r.final = ("final", last.get("content"))', "        pass"),),
    ),
    Mutation(
        "M13",
        "the outcome_unknown decision of an interrupted call is not committed",
        (
            (
                "agentloop/_run/calls.py",
                '        """A call the step settles without running it (skipped, rejected, ...): committed, then its events."""\n        await run.settle(record)',
                '        """A call the step settles without running it (skipped, rejected, ...): committed, then its events."""\n        run.step_records[record.id] = record',
            ),
        ),
    ),
]


def apply(copy: Path, m: Mutation) -> None:
    for file, old, new in m.patches:
        path = copy / file
        source = path.read_text()
        n = source.count(old)
        if n != 1:
            raise SystemExit(
                f"{m.key}: the text to replace occurs {n} times in {file} (the source changed; update the mutation)"
            )
        path.write_text(source.replace(old, new))


def run_tests(copy: Path, tests: list[str], maxfail: int) -> tuple[list[str], str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    if maxfail:
        cmd.append(f"--maxfail={maxfail}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return [f.split("::", 1)[1] for f in failed], tail, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="mutation keys (default: all)")
    p.add_argument("--maxfail", type=int, default=0, help="stop each test run after N failures (0: run all)")
    p.add_argument("--tests", nargs="*", default=TESTS)
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.key in args.only]
    holes = 0
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix=f"mutant-{m.key}-") as tmp:
            copy = Path(tmp)
            for part in ("agentloop", "tests"):
                shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(ROOT / "pyproject.toml", copy)
            apply(copy, m)
            check = subprocess.run(
                [sys.executable, "-c", "import agentloop; print(agentloop.__file__)"],
                cwd=copy,
                env={**os.environ, "PYTHONPATH": str(copy)},
                capture_output=True,
                text=True,
            )
            assert check.stdout.startswith(str(copy)), (
                f"the copy is not the package under test: {check.stdout}"
            )
            failed, tail, seconds = run_tests(copy, args.tests, args.maxfail)
        caught = bool(failed) != (m.key == "M0")
        holes += not caught
        print(f"{m.key:4} {'ok  ' if caught else 'HOLE'} {m.what}")
        print(f"     {seconds:.0f} s, {tail}")
        for f in failed:
            print(f"       failed: {f}")
        sys.stdout.flush()
    print("every mutation was caught" if not holes else f"{holes} mutation(s) not caught")
    return 1 if holes else 0


if __name__ == "__main__":
    sys.exit(main())
