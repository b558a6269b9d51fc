"""What `agentloop run`, `agentloop runs resume` and `agentloop worker` share: the tool options,
loading tools from `module:attribute` (the current directory importable, as with `python -m`),
and printing untrusted text (model output, run ids) without its control characters.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._http.client import FluxClient
    from ._tools.registry import ToolRegistry

T = TypeVar("T")

__all__ = [
    "add_tool_options",
    "check_tool_ref",
    "cli_text",
    "flux_client",
    "refuse_unknown_leading_options",
    "load_tools",
    "import_from_cwd",
    "safe",
    "safe_text",
    "unwrap",
    "until_interrupted",
]

TOOL_HELP = (
    "a tool to offer (repeatable): MODULE:FUNCTION, or MODULE:REGISTRY for a whole ToolRegistry; "
    "MODULE is imported from the current directory like `python -m`"
)


def refuse_unknown_leading_options(p: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Name an unknown option given before the command: argparse says only "the following
    arguments are required: COMMAND" for `agentloop --bogus`, hiding the typo."""
    known = [s for action in p._actions for s in action.option_strings]
    for token in argv:
        if not token.startswith("-") or token in ("-", "--"):
            return  # the command (or a positional): the subcommand's parser checks the rest
        name = token.split("=", 1)[0]
        # argparse accepts a prefix of a long option (`--verb`) and short flags run together (`-vh`)
        if name.startswith("--"):
            ok = any(k.startswith(name) for k in known)
        else:
            ok = name in known or all(f"-{c}" in known for c in name[1:])
        if not ok:
            p.error(
                f"unrecognized option {name!r} before the command; options of a command go after it "
                "(e.g. `agentloop run --help`); see `agentloop --help`"
            )


def add_tool_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """`--tool` (repeatable; `--tools` is the same option) and `--base-url`, as every command names them."""
    p.add_argument(
        "--tool",
        "--tools",
        dest="tool",
        action="append",
        default=[],
        required=required,
        metavar="MODULE:ATTR",
        help=TOOL_HELP,
    )
    p.add_argument(
        "--base-url", default=None, help="FluxRouter endpoint (default $FLUX_BASE_URL or FluxRouter's)"
    )


def import_from_cwd() -> None:
    """Make modules in the current directory importable, as `python -m` and `python script.py`
    do (the `agentloop` entry point's sys.path[0] is its bin directory instead)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_tools(specs: Sequence[str]) -> ToolRegistry:
    """The registry the `--tool` options name. One registry is used as it is (its MCP servers and
    sandboxes included); functions and several registries are gathered into a new one."""
    from ._imports import resolve
    from ._tools.registry import ToolRegistry

    import_from_cwd()
    found = [check_tool_ref(spec, resolve(spec, what="tool")) for spec in specs]
    if len(found) == 1 and isinstance(found[0], ToolRegistry):
        return found[0]
    tools = ToolRegistry()
    for obj in found:
        for t in obj if isinstance(obj, ToolRegistry) else ():
            tools.register(
                t.fn,
                t.name,
                t.description,
                t.parameters,
                sandbox=t.sandbox,
                limits=t.limits,
                idempotent=t.idempotent,
                requires_approval=t.requires_approval,
            )
        if not isinstance(obj, ToolRegistry):
            tools.register(obj)
    return tools


def check_tool_ref(spec: str, obj: object) -> Callable[..., Any] | ToolRegistry:
    """`obj` if a `--tool` may name it (a callable or a ToolRegistry); otherwise an error naming the
    reference and what it is (the registry's "cannot register 42" named neither the option nor the spec)."""
    from ._exceptions import ConfigurationError
    from ._tools.registry import ToolRegistry

    if callable(obj) or isinstance(obj, ToolRegistry):
        return obj
    shown = safe(repr(obj))
    shown = shown if len(shown) <= 60 else f"{shown[:57]}..."
    raise ConfigurationError(
        f"--tool {safe(spec)!r} names {shown} (of type {type(obj).__name__}), not a function or a ToolRegistry: "
        "name a function (MODULE:FUNCTION) or a registry (MODULE:REGISTRY)"
    )


KEY_ADVICE = (
    "set the FLUX_API_KEY environment variable (e.g. `export FLUX_API_KEY=...`); there is no key "
    "option, as a key in a command's arguments would show in `ps` and the shell history"
)


def flux_client(base_url: str | None) -> FluxClient:
    """The client of a command: with no key, the advice is how to give it to the command (the
    library's "pass FluxClient(api_key=...)" is no help there)."""
    from ._exceptions import ConfigurationError
    from ._http.client import FluxClient

    if not os.environ.get("FLUX_API_KEY"):
        raise ConfigurationError(f"no API key: {KEY_ADVICE}")
    return FluxClient(base_url=base_url)


# The library's advice names its Python API; on the command line the same fix is an option or the
# environment. (Phrases of _http/config.py and _http/errors.py; tests/test_cli_messages.py holds them.)
_CLI_SPEAK = (
    ("FLUX_API_KEY or FluxClient(api_key=...)", "the FLUX_API_KEY environment variable"),
    ("FluxClient(api_key=...) or FLUX_API_KEY", "the FLUX_API_KEY environment variable"),
    ("Agent(model='flux-pinned-gpt-5')", "--model flux-pinned-gpt-5"),
    ("; other fields as FluxClient(headers={...})", ""),
    ("base_url must", "the base URL (--base-url or $FLUX_BASE_URL) must"),
    ("max_steps must", "--max-steps must"),
    ("run_id must", "--run-id must"),
    ("model must be a non-empty string", "--model must be a non-empty string"),
)


def cli_text(message: str) -> str:
    """An error message for a command's stderr: the library's Python advice in command-line terms."""
    for library, cli in _CLI_SPEAK:
        message = message.replace(library, cli)
    return safe_text(message)


# C0 controls except tab and newline, DEL, C1 controls: a model (or whoever wrote a run id) can
# write ESC sequences that would move the cursor, retitle or recolour the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def safe_text(text: str) -> str:
    """Model text for a terminal: tabs and newlines kept, every other control character escaped."""
    return _CONTROL.sub(_escape, text)


def safe(value: object) -> str:
    """One-line text (an id, a name): every control character escaped, newlines included."""
    return _CONTROL_ALL.sub(_escape, str(value))


def unwrap(e: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups, as task groups raise them."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


async def until_interrupted(command: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; Ctrl-C cancels it and raises KeyboardInterrupt (exit 130).

    The loop watches SIGINT itself (anyio's signal receiver: a wakeup fd on both backends).
    asyncio's own Ctrl-C handling only runs once the main thread wakes up, and the kernel may
    hand the signal to a thread tool's thread instead, which does not wake it: `agentloop run`
    then sat in its event loop until the tool returned.
    """
    import signal
    import threading

    import anyio

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return await command()
    interrupted = False
    result: list[T] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()

        async def run() -> None:
            result.append(await command())
            tg.cancel_scope.cancel()  # done: stop watching

        tg.start_soon(watch)
        tg.start_soon(run)
    if interrupted or not result:
        raise KeyboardInterrupt
    return result[0]
