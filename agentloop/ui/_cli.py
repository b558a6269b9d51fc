"""`agentloop ui --journal runs.db [--host H] [--port P] [--token T] [--allow-resume --tools M:R]`.

Client limits (see `_serve.py`): `--max-connections` (64), `--request-timeout` (10 s for a
request to arrive), `--keep-alive` (5 s idle), `--max-header-bytes` (16 KiB), `--write-timeout` (30 s for a
client that reads none of its answer).

Binds 127.0.0.1 by default; a non-loopback --host is refused without --token (the journal
holds prompts, tool arguments and results). Prints the URL and opens nothing by itself.
Exit status: 0 stopped, 1 journal or setup error, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import socket
import sys
from typing import TextIO

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentloop ui", description="Serve the run inspector for a journal.")
    p.add_argument("--journal", help="journal file (default: $AGENTLOOP_JOURNAL or ./agentloop-runs.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--token",
        default=None,
        help="require this token (needed for a non-loopback --host); 'generate' makes one",
    )
    p.add_argument(
        "--allow-resume",
        action="store_true",
        help="resume a paused run from the page once its calls are decided (needs --tools)",
    )
    p.add_argument(
        "--tools", default=None, metavar="MODULE:REGISTRY", help="the ToolRegistry resumed runs use"
    )
    p.add_argument(
        "--base-url", default=None, help="model endpoint for resumed runs (default $FLUX_BASE_URL)"
    )
    limits = p.add_argument_group("client limits (a slow, idle or greedy client cannot hold the server)")
    limits.add_argument("--max-connections", type=int, default=64, help="connections held at once (64)")
    limits.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds for a request to arrive (10)"
    )
    limits.add_argument("--keep-alive", type=int, default=5, help="seconds an idle connection is kept (5)")
    limits.add_argument(
        "--max-header-bytes", type=int, default=16384, help="size of a request's head (16384)"
    )
    limits.add_argument(
        "--write-timeout", type=float, default=30.0, help="seconds a client may read none of its answer (30)"
    )
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_LIMITS = ("max_connections", "request_timeout", "keep_alive", "max_header_bytes", "write_timeout")


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    path = args.journal or os.environ.get("AGENTLOOP_JOURNAL") or "agentloop-runs.db"
    token = secrets.token_urlsafe(16) if args.token == "generate" else args.token
    refused = _refusal(args, path, token)
    if refused is not None:
        print(f"agentloop ui: {refused[1]}", file=err)
        return refused[0]
    try:
        import uvicorn

        from ._app import create_app
        from ._serve import Limits
    except ImportError as e:
        print(f"agentloop ui: {e}; install the inspector with: pip install 'agentloop[ui]'", file=err)
        return 1
    try:
        limits = Limits(**{k: getattr(args, k) for k in _LIMITS})
    except ValueError as e:
        print(f"agentloop ui: {e}", file=err)
        return 2
    factory = None
    if args.allow_resume:
        from agentloop import ConfigurationError

        try:
            factory = _agent_factory(args.tools, args.base_url)
        except ConfigurationError as e:
            print(f"agentloop ui: {e}", file=err)
            return 1
    try:
        sock = _listen(args.host, args.port)
    except OSError as e:
        print(f"agentloop ui: cannot listen on {args.host}:{args.port}: {e}", file=err)
        return 1
    port = sock.getsockname()[1]
    app = create_app(path, token=token, host=args.host, agent_factory=factory)
    shown = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"agentloop run inspector for {path}: {url}", file=out, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **limits.uvicorn()))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is stopped
        server.run(sockets=[sock])
    return 0


def _refusal(args: argparse.Namespace, path: str, token: str | None) -> tuple[int, str] | None:
    """Why the options cannot be served (exit code, message), or None."""
    if not _is_loopback(args.host) and not token:
        return 2, (
            f"refusing to serve {args.host} without --token: anyone who can reach it could "
            "read the journal. Pass --token SECRET (or --token generate), or bind 127.0.0.1."
        )
    if args.allow_resume != bool(args.tools):
        return 2, "--allow-resume and --tools MODULE:REGISTRY go together"
    if not os.path.exists(path):
        return 1, f"no journal at {path}; pass --journal PATH or set AGENTLOOP_JOURNAL"
    if os.path.isfile(path) and os.path.getsize(path) == 0:  # the inspector only reads: it creates none
        return 1, f"{path} is empty, not a journal yet: runs with SQLiteJournal({path!r}) create it"
    # A file that is not a journal (or of another version) is refused here, as `agentloop runs`
    # refuses it, rather than served as a 500 on every page. One read of the journal's meta.
    import anyio

    from agentloop import JournalError, SQLiteJournal

    try:
        anyio.run(SQLiteJournal(path, read_only=True).change_marker)
    except JournalError as e:
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(e))  # no terminal escapes
        return 1, f"{shown}; pass --journal PATH of an agentloop journal"
    return None


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket before the URL is printed: an early request waits, never is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)  # waiting to be accepted: past max-connections they are closed at once
    except OSError:
        sock.close()
        raise
    return sock


def _agent_factory(spec: str, base_url: str | None):  # type: ignore[no-untyped-def]
    from agentloop import Agent, ConfigurationError, FluxClient, ToolRegistry, import_ref

    tools = import_ref(spec, what="tool registry")
    if not isinstance(tools, ToolRegistry):
        raise ConfigurationError(
            f"--tools {spec!r} names an object of type {type(tools).__name__}, not a ToolRegistry"
        )
    if not os.environ.get("FLUX_API_KEY"):  # said now, not by FluxClient at the first resume in the page
        raise ConfigurationError("--allow-resume needs an API key: set the FLUX_API_KEY environment variable")

    def make(model: str | None, journal):  # type: ignore[no-untyped-def]
        return Agent(
            client=FluxClient(base_url=base_url), tools=tools, model=model or "flux-auto", journal=journal
        )

    return make
