"""Which event loop a FluxClient serves, and whether it is still open.

A client's connections (sockets, httpx's pool, the waiters of a full pool) belong to the event loop
that opened them. Used from another loop (a module-level client shared by two `asyncio.run` calls,
a notebook that restarted its loop, a thread running its own loop) they failed with a raw
`RuntimeError` ("... attached to a different loop"), and closing the client afterwards raised
another one. Used after `aclose()` (or the end of its `async with` block), a request was retried
as a connection error for over a second, then blamed the base URL and the network (lean
transport), or raised httpx's raw `RuntimeError` (httpx transports). So a client binds to the
loop of its first request and refuses, at once and typed, a request from another loop or after
it was closed: both are a caller's mistake, and retrying cannot fix either.
"""

from __future__ import annotations

import sys

from .._exceptions import ConfigurationError

__all__ = ["LoopBinding", "current_loop"]


def current_loop() -> object:
    """The running event loop (asyncio) or run (trio) of this thread; None outside both.
    Called once per model request (with `check`, ~2.7 µs measured on a busy machine: under 1 % of a
    step). Never imports asyncio or trio itself."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()
        except RuntimeError:  # not inside trio.run
            pass
    return None


class LoopBinding:
    """The state a client checks before sending: open or closed, and the loop it serves."""

    __slots__ = ("closed", "depth", "loop")

    def __init__(self) -> None:
        self.closed = False
        self.depth = 0  # nested `async with` blocks: the outermost one closes
        self.loop: object = None

    def check(self) -> None:
        """Raise `ConfigurationError` if the client is closed or serves another loop; on the
        first request, bind to this one."""
        if self.closed:
            raise ConfigurationError(_CLOSED)
        loop = current_loop()
        if loop is not self.loop:
            if self.loop is not None:
                raise ConfigurationError(_OTHER_LOOP)
            self.loop = loop

    def check_open(self) -> None:
        if self.closed:
            raise ConfigurationError(_CLOSED)


_CLOSED = (
    "this FluxClient is closed (its `async with` block ended, or aclose() was called), so it "
    "cannot send requests; create a new FluxClient, or keep its `async with` block open around "
    "every run that uses it"
)
_OTHER_LOOP = (
    "this FluxClient was first used in another event loop, and its connections belong to that "
    "loop; a client serves one event loop. Create it inside the loop that runs the agents (e.g. "
    "`async with FluxClient() as client:` in the function given to asyncio.run / trio.run / "
    "anyio.run; in a web app, in the app's lifespan, not at module level), one per loop, or use "
    "Agent.run_sync, which gives each call a copy of the client with a pool of its own"
)
