"""Tools for the Temporal tests; importable by worker subprocesses (`temporal_tools:registry`).

Every tool appends a line to the side-effect file named by `AGENTLOOP_SIDE_EFFECTS` (when set):
`start <tool> <arg>` before it does anything and `end <tool> <arg>` when it is done, so a test
can count executions per call exactly, across processes and crashes. `HANG_TOOLS` (comma-separated
names) makes those tools hang after writing `start` (and print `HANGING <tool>` on stdout), for a
test to kill or stop the worker at that point; `GATE_FIFO` makes `gated` wait for one line on it.
"""

from __future__ import annotations

import os
import sys

import anyio

from agentloop import ToolRegistry

registry = ToolRegistry()


def _note(what: str) -> None:
    path = os.environ.get("AGENTLOOP_SIDE_EFFECTS")
    if path:
        with open(path, "a") as f:
            f.write(what + "\n")


async def _maybe_hang(name: str) -> None:
    if name in os.environ.get("HANG_TOOLS", "").split(","):
        print(f"HANGING {name}", flush=True)
        await anyio.sleep_forever()


@registry.tool
async def get_weather(city: str) -> dict:
    """Get the current weather for a city.

    Args:
        city: City name
    """
    _note(f"start get_weather {city}")
    _note(f"end get_weather {city}")
    return {"city": city, "temp_c": 21, "sky": "clear"}


@registry.tool
async def record(key: str) -> str:
    """Record a key (not idempotent)."""
    _note(f"start record {key}")
    await _maybe_hang("record")
    _note(f"end record {key}")
    return f"recorded {key}"


@registry.tool(idempotent=True)
async def fetch(key: str) -> str:
    """Fetch a key (idempotent: safe to run again)."""
    _note(f"start fetch {key}")
    await _maybe_hang("fetch")
    _note(f"end fetch {key}")
    return f"value of {key}"


@registry.tool
def gated(key: str) -> str:
    """Wait for the test to open the gate (a line on GATE_FIFO), then finish."""
    _note(f"start gated {key}")
    print("HANGING gated", flush=True)
    with open(os.environ["GATE_FIFO"]) as fifo:
        fifo.readline()
    _note(f"end gated {key}")
    return f"gated {key}"


@registry.tool
async def wait_forever(key: str) -> str:
    """Never returns (for time limits and cancellation)."""
    _note(f"start wait_forever {key}")
    await anyio.sleep_forever()
    return "unreachable"


@registry.tool(requires_approval=True)
async def send_email(to: str, body: str) -> dict:
    """Send an email (needs approval)."""
    _note(f"start send_email {to}")
    return {"sent": True, "to": to}


@registry.tool
async def boom(x: int) -> int:
    """Always raises."""
    raise ValueError(f"bad x {x}")


if __name__ == "__main__":  # pragma: no cover - `python temporal_tools.py ARGS`: a worker
    import os

    from agentloop.temporal import worker_main

    code = worker_main(sys.argv[1:])
    # As `agentloop worker` does (see worker_main): a normal exit aborts now and then in
    # temporalio's native threads during interpreter finalization (a SIGTERM test saw exit -6).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
