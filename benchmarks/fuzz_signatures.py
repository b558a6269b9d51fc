"""The long run of the signature property test (tests/test_signature_property.py).

    python benchmarks/fuzz_signatures.py [--examples 500] [--backend asyncio|trio] [--seed N]

Draws tool signatures from the supported type grammar (tests/signature_grammar.py), and for each
one registers it, generates arguments from its schema with hypothesis-jsonschema, and runs a
full `Agent.run` against the fake router (real HTTP), exactly as the in-suite test does. Unlike
the test it does not stop at the first failure: it counts outcomes and prints every distinct
failure (first example of each) so one run shows everything it found.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import anyio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from signature_grammar import signatures
from test_signature_property import exercise

from agentloop import FluxClient
from agentloop.testing import FakeFluxRouter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--seed", type=int, default=None)
    opts = parser.parse_args()

    outcomes: collections.Counter[str] = collections.Counter()
    failures: dict[str, tuple[str, str]] = {}
    params = collections.Counter()

    @settings(
        max_examples=opts.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every failure is kept as it was found
        suppress_health_check=list(HealthCheck),
    )
    @given(sig=signatures(), data=st.data())
    def one(sig, data) -> None:  # type: ignore[no-untyped-def]
        async def run() -> str:
            async with (
                FakeFluxRouter() as router,
                FluxClient(base_url=router.base_url, api_key="test") as client,
            ):
                return await exercise(sig, data, router, client)

        params[len(sig.params)] += 1
        try:
            outcomes[anyio.run(run, backend=opts.backend)] += 1
        except Exception as e:
            key = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            outcomes["FAILED"] += 1
            failures.setdefault(key, (repr(sig), traceback.format_exc(limit=-3)))

    if opts.seed is not None:
        one = __import__("hypothesis").seed(opts.seed)(one)
    start = time.perf_counter()
    one()
    elapsed = time.perf_counter() - start
    total = sum(outcomes.values())
    print(f"signatures generated: {total} in {elapsed:.0f} s ({opts.backend})")
    print(f"parameters per signature: {dict(sorted(params.items()))}")
    for kind, n in outcomes.most_common():
        print(f"  {kind}: {n}")
    for key, (sig, tb) in failures.items():
        print(f"\nFAILURE {key}\n  first seen on: {sig}\n{tb}")


if __name__ == "__main__":
    main()
