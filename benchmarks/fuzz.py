"""Fuzz agentloop with hostile input through real runs; one section per input kind.

    .venv/bin/python benchmarks/fuzz.py [--examples 10000] [--backend asyncio|trio|both] [--only KIND ...]

Each example is played to a real run over the fake router (real HTTP on loopback) and must end
in a final answer (tool errors fed back to the model included) or a typed `AgentloopError`;
error texts must fit `InputBudget.max_error_bytes` and every tool call must keep its tool
message. Reported per kind: examples, outcomes, time, RSS before / peak / after. A failing
example is shrunk by hypothesis and printed, and the script exits 1.

Input kinds (add a section, a `KINDS` entry, for each new one):
  openai-answer      model answers on the OpenAI wire (tests/hostile_answers.py)
  anthropic-answer   model answers on the Anthropic wire (tests/hostile_answers.py)

`tests/test_fuzz_answers.py` runs the same strategies with a few examples in the suite.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile_answers import AnswerServer, anthropic_body, fuzz_tools, openai_body, rss_mb, run_one

from agentloop import FluxClient, RetryPolicy
from agentloop.testing import FakeFluxRouter

# --- section: model answers (both wires) ------------------------------------------------------------


def model_answers(wire: str) -> Callable[[Any, int, Counter[str]], None]:
    strategy = openai_body() if wire == "openai" else anthropic_body()

    def run(portal: Any, examples: int, outcomes: Counter[str]) -> None:
        with ExitStack() as stack:
            server = AnswerServer()
            router = stack.enter_context(portal.wrap_async_context_manager(FakeFluxRouter(server.handler)))
            server.router = router
            url = router.base_url if wire == "openai" else router.anthropic_url
            client = stack.enter_context(
                portal.wrap_async_context_manager(
                    FluxClient(base_url=url, api_key="k", stream=False, retry=RetryPolicy(max_retries=0))
                )
            )
            tools = fuzz_tools()

            @settings(
                max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            @given(body=strategy)
            def one(body: bytes) -> None:
                outcome = portal.call(run_one, client, server, body, tools)
                assert outcome.startswith("final") or outcome.endswith(("Error", "Exceeded", "Detected")), (
                    outcome
                )
                outcomes[outcome] += 1

            one()

    return run


KINDS: dict[str, Callable[[str], Callable[[Any, int, Counter[str]], None]]] = {
    "openai-answer": lambda _: model_answers("openai"),
    "anthropic-answer": lambda _: model_answers("anthropic"),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=10_000, help="in total, split over kinds and backends")
    p.add_argument("--backend", default="both", choices=["asyncio", "trio", "both"])
    p.add_argument("--only", nargs="*", choices=sorted(KINDS))
    args = p.parse_args()
    kinds = args.only or list(KINDS)
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    per = max(1, args.examples // (len(kinds) * len(backends)))
    failed = False
    for backend in backends:
        with start_blocking_portal(backend) as portal:
            for kind in kinds:
                outcomes: Counter[str] = Counter()
                before, t0 = rss_mb(), time.perf_counter()
                try:
                    KINDS[kind](kind)(portal, per, outcomes)
                except Exception as e:  # hypothesis has shrunk and printed the failing example
                    failed = True
                    print(f"FAILED {kind} on {backend}: {type(e).__name__}: {str(e)[:2000]}")
                n = sum(outcomes.values())
                print(
                    f"{kind} on {backend}: {n} examples in {time.perf_counter() - t0:.0f} s; RSS {before:.0f} MB -> "
                    f"{rss_mb():.0f} MB (peak {peak_rss_mb():.0f} MB)"
                )
                for outcome, count in outcomes.most_common():
                    print(f"    {count:6d}  {outcome}")
                sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
