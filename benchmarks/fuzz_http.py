"""Fuzz: hostile HTTP responses and damaged journals through real runs (issue #15).

Every example is one real agent run against a real loopback server (`FakeFluxRouter` serving a
generated response verbatim) or one resume from a randomly damaged real journal file. Each must
end in a final answer, a tool error fed back, or a typed `AgentloopError`; anything else (a raw
exception, a run that does not end within its bound) is a finding and is printed.

Responses are drawn from: any status a body is allowed with, headers (content types, retry
hints, encodings, garbage), bodies (valid completions of both wires, truncated or mutated ones,
random JSON and bytes), SSE streams (valid events shuffled with garbage lines, comments, odd line
ends), endless and oversized bodies, Content-Length lies, slow drips.

    .venv/bin/python benchmarks/fuzz_http.py                       # 10,000 responses + 2,000 journals
    .venv/bin/python benchmarks/fuzz_http.py --http 500 --journal 100 --backend trio --json

The suite runs a few dozen examples of the same strategies (tests/test_fuzz_http.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import anyio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agentloop import Agent, AgentloopError, FluxClient, InputBudget, RetryPolicy, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, Reply, ScriptedModel, call, raw, text, tool_calls

BUDGET = InputBudget(
    max_response_bytes=256 * 1024, max_sse_line_bytes=64 * 1024, stream_idle_timeout=1, request_timeout=5
)
RETRY = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005, max_retry_after=0.01)
HANG = 30.0  # seconds: a run that has not ended by then is a finding (its own bound is 5 s a request)

tools = ToolRegistry()


@tools.tool
def echo(x: str) -> str:
    """Echo x."""
    return x


# --- strategies: HTTP responses -------------------------------------------------------------------

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-_./0123456789", min_size=0, max_size=20)
_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)  # h11: no edge spaces
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def valid_body(wire: str, tool: bool, args: Any = None) -> dict[str, Any]:
    """A well-formed answer of the wire: text, or a call of `echo` with `args` (valid by default)."""
    args = {"x": "a"} if args is None else args
    if wire == "anthropic":
        block = (
            {"type": "tool_use", "id": "tu_1", "name": "echo", "input": args}
            if tool
            else {"type": "text", "text": "hi"}
        )
        return {"id": "m1", "type": "message", "role": "assistant", "content": [block],
                "stop_reason": "tool_use" if tool else "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else "hi"}
    if tool:
        arguments = args if isinstance(args, str) else json.dumps(args)
        message["tool_calls"] = [
            {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": arguments}}
        ]
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message,
            "finish_reason": "tool_calls" if tool else "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}  # fmt: skip


def valid_frames(wire: str) -> list[bytes]:
    if wire == "anthropic":
        events = [("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
                  ("message_stop", {"type": "message_stop"})]  # fmt: skip
        return [f"event: {name}\n".encode() + b"data: " + _dumps(obj) + b"\n\n" for name, obj in events]
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
    return [b"data: " + _dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


@st.composite
def sse_bodies(draw: st.DrawFn, wire: str) -> bytes:
    frames = valid_frames(wire)
    garbage = st.sampled_from([b": keep-alive\n\n", b"event: ping\ndata: {}\n\n", b"data: {not json\n\n", b"data:\n\n",
                               b"retry: x\n", b"event: error\ndata: {\"error\": {\"type\": \"overloaded_error\"}}\n\n",
                               b"\r\n", b"\r", b"data: [DONE]\n\n", b"id: \x00\n"])  # fmt: skip
    parts = draw(st.lists(st.one_of(st.sampled_from(frames), garbage, json_values.map(lambda v: b"data: " + _dumps(v) + b"\n\n"),
                                    st.binary(max_size=60)), max_size=12))  # fmt: skip
    if draw(st.booleans()):
        parts = frames + parts if draw(st.booleans()) else parts + frames
    body = b"".join(parts)
    ending = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return body.replace(b"\n", ending) if ending != b"\n" else body


@st.composite
def bodies(draw: st.DrawFn, wire: str) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["valid", "valid", "truncated", "mutated", "json", "bytes", "sse", "sse"]))
    if kind == "sse":
        return draw(sse_bodies(wire)), "text/event-stream"
    if kind == "bytes":
        return draw(st.binary(max_size=300)), "application/json"
    if kind == "json":
        return _dumps(draw(json_values)), "application/json"
    args = draw(
        st.none() | json_values | st.text(max_size=20)
    )  # None: valid arguments; else likely a tool error
    body = valid_body(wire, draw(st.booleans()), args)
    if kind == "mutated":  # one field replaced by anything
        key = draw(st.sampled_from(sorted(body)))
        body[key] = draw(json_values)
    data = _dumps(body)
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data, "application/json"


@st.composite
def responses(draw: st.DrawFn, wire: str) -> Reply:
    status = draw(st.sampled_from([200] * 6 + [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 529]) |
                  st.integers(200, 599).filter(lambda s: s not in (204, 304)))  # fmt: skip
    body, content_type = draw(bodies(wire))
    content_type = draw(
        st.sampled_from([content_type] * 4 + ["text/html", "application/json; charset=latin-1", ""]) | _TOKEN
    )
    headers = draw(st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "x-should-retry", "x-request-id", "content-encoding", "x-junk"]),
        st.sampled_from(["0", "-1", "1e9", "abc", "true", "false", "gzip", "deflate", "br", "identity",
                         "Wed, 21 Oct 2015 07:28:00 GMT"]) | _HEADER_VALUE, max_size=3))  # fmt: skip
    shape = draw(st.sampled_from(["plain"] * 6 + ["endless", "oversized", "lying-length", "drip"]))
    if (
        shape == "endless"
    ):  # pieces of >= 1 KiB: a 1-byte chunk loop would measure chunk overhead, not the bound
        piece = (body or b"x") * max(1, 1024 // max(len(body), 1))
        return raw(status, piece, content_type=content_type, headers=headers, repeat=None)
    if shape == "oversized":
        return raw(status, b"x" * 65536, content_type=content_type, headers=headers, repeat=8)
    if shape == "lying-length":
        return raw(status, body, content_type=content_type, headers=headers, declared_length=len(body) + 10)
    if shape == "drip":
        return raw(
            status, body or b" ", content_type=content_type, headers=headers, repeat=5, chunk_delay=0.01
        )
    return raw(status, body, content_type=content_type, headers=headers)


# --- running one example ------------------------------------------------------------------------------


async def http_example(reply: Reply, wire: str, streamed: bool, budget: InputBudget = BUDGET) -> str:
    """One run against `reply` (then plain answers): its outcome class, or "FINDING ..."."""

    def handler(_req: Any) -> Reply:
        return reply if router.served < 2 else text("ok")  # the first request and its retry

    async with FakeFluxRouter(handler) as router:
        base = router.anthropic_url if wire == "anthropic" else router.base_url
        async with FluxClient(
            base_url=base, api_key="sk-fuzz-0123456789", retry=RETRY, input_budget=budget
        ) as client:
            agent = Agent(client=client, tools=tools)
            try:
                with anyio.fail_after(HANG):
                    if streamed:
                        async with agent.stream("hi") as events:
                            async for event in events:
                                last = event
                        result = last.result  # type: ignore[attr-defined]
                    else:
                        result = await agent.run("hi")
            except AgentloopError as e:
                return f"typed {type(e).__name__}"
            except TimeoutError:
                return "FINDING hang"
            except Exception as e:  # the point of a fuzzer
                return f"FINDING raw {type(e).__name__}: {str(e)[:200]}"
    if any(r.status != "ok" for r in result.tool_calls):
        return "tool error fed back"
    return "final answer"


def make_journal(path: str) -> None:
    async def go() -> None:
        journal = SQLiteJournal(path)
        script = [
            tool_calls(call("echo", {"x": "1"}, id="a")),
            tool_calls(call("echo", {"x": "2"}, id="b")),
            text("done"),
        ]
        await Agent(client=ScriptedModel(script), tools=tools, journal=journal).run("hi", run_id="r1")
        journal.close()

    anyio.run(go)


async def journal_example(path: str) -> str:
    journal = SQLiteJournal(path)
    try:
        with anyio.fail_after(HANG):
            result = await Agent(
                client=ScriptedModel([text("done")] * 3), tools=tools, journal=journal
            ).resume("r1")
        return "final answer" if result.output is not None else "ended"
    except AgentloopError as e:
        return f"typed {type(e).__name__}"
    except TimeoutError:
        return "FINDING hang"
    except Exception as e:
        return f"FINDING raw {type(e).__name__}: {str(e)[:200]}"
    finally:
        journal.close()


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 20))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 4)) == 0:
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


# --- the runs ---------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


RSS_JUMP_MB = 32  # one example raising the peak RSS by more than this is reported


def describe(reply: Reply) -> str:
    return (f"status={reply.status} body={len(reply.body)}B repeat={reply.repeat} length={reply.declared_length} "
            f"type={reply.content_type!r} headers={dict(reply.headers)}")  # fmt: skip


def fuzz_http(
    n: int,
    backend: str,
    outcomes: Counter[str],
    jumps: list[str] | None = None,
    *,
    strict: bool = False,
    seconds: Counter[str] | None = None,
    progress: bool = False,
) -> None:
    """`n` generated responses, each through a real run. `strict`: a finding fails the example
    (hypothesis then shrinks it to the smallest response that shows it: the test suite's mode)."""

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(wire=st.sampled_from(["openai", "anthropic"]), streamed=st.booleans(), data=st.data())
    def run(wire: str, streamed: bool, data: st.DataObject) -> None:
        reply = data.draw(responses(wire))
        before = _max_rss_mb()
        started = time.perf_counter()
        outcome = anyio.run(http_example, reply, wire, streamed, backend=backend)
        outcomes[outcome] += 1
        if seconds is not None:
            seconds[outcome] += time.perf_counter() - started
        if progress and sum(outcomes.values()) % 500 == 0:
            print(
                f"{backend}: {sum(outcomes.values())} examples, max RSS {_max_rss_mb():.0f} MB",
                file=sys.stderr,
                flush=True,
            )
        assert not (strict and outcome.startswith("FINDING")), (
            f"{outcome} for {wire} streamed={streamed} {describe(reply)}"
        )
        if jumps is not None and _max_rss_mb() - before > RSS_JUMP_MB:
            jumps.append(
                f"+{_max_rss_mb() - before:.0f} MB: {wire} streamed={streamed} {describe(reply)} -> {outcome}"
            )

    run()


def fuzz_journal(n: int, backend: str, outcomes: Counter[str], workdir: str, *, strict: bool = False) -> None:
    """`n` random corruptions of a real journal file, each resumed (same `strict` as above)."""
    if n < 1:
        return
    base = os.path.join(workdir, "base.db")
    make_journal(base)
    with open(base, "rb") as f:
        original = f.read()
    counter = iter(range(10**9))

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        path = os.path.join(workdir, f"d{next(counter)}.db")
        with open(path, "wb") as f:
            f.write(data.draw(damaged(original)))
        outcome = anyio.run(journal_example, path, backend=backend)
        outcomes[outcome] += 1
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        assert not (strict and outcome.startswith("FINDING")), outcome

    run()


# --- the memory repros, with the default budget ------------------------------------------------

MEMORY_CASES = {
    "1.5 GB body": dict(body=b"x" * (1 << 20), repeat=1536, content_type="application/json", streamed=False),
    "200 MB SSE line": dict(
        body=b"data: " + b"x" * ((1 << 20) - 6), repeat=200, content_type="text/event-stream", streamed=True
    ),
}


async def memory_case(name: str) -> dict[str, Any]:
    """One of the issue's hostile bodies against a client with the default `InputBudget`."""
    case = MEMORY_CASES[name]
    reply = raw(200, case["body"], content_type=case["content_type"], repeat=case["repeat"])
    before = _max_rss_mb()
    started = time.perf_counter()
    outcome = await http_example(reply, "openai", case["streamed"], budget=InputBudget())
    return {"case": name, "outcome": outcome, "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_growth_mb": round(_max_rss_mb() - before, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http", type=int, default=10_000, help="HTTP response examples")
    parser.add_argument("--journal", type=int, default=2_000, help="damaged-journal examples")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--memory", action="store_true", help="only the issue's 1.5 GB body / 200 MB SSE line, default budget"
    )
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:  # one case per process: peak RSS is per process
        print(
            json.dumps(
                anyio.run(
                    memory_case,
                    args.memory_case,
                    backend=args.backend if args.backend != "both" else "asyncio",
                )
            )
        )
        return
    if args.memory:
        for name in MEMORY_CASES:
            for backend in ["asyncio", "trio"] if args.backend == "both" else [args.backend]:
                cmd = [sys.executable, __file__, "--memory-case", name, "--backend", backend]
                out = __import__("subprocess").run(cmd, capture_output=True, text=True, check=True).stdout
                print(backend, out.strip())
        return
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for backend in backends:
        http: Counter[str] = Counter()
        jumps: list[str] = []
        seconds: Counter[str] = Counter()
        started = time.perf_counter()
        fuzz_http(args.http // len(backends), backend, http, jumps, seconds=seconds, progress=True)
        http_s = time.perf_counter() - started
        journal: Counter[str] = Counter()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            fuzz_journal(args.journal // len(backends), backend, journal, workdir)
        report[backend] = {"http": dict(http.most_common()), "http_seconds": round(http_s, 1), "rss_jumps": jumps,
                           "seconds_by_outcome": {k: round(v, 1) for k, v in seconds.most_common()},
                           "journal": dict(journal.most_common()), "journal_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    report["max_rss_mb"] = round(_max_rss_mb(), 1)
    report["max_rss_mb_at_start"] = round(rss0 / 1024, 1)
    findings = {
        b: [k for k in (*report[b]["http"], *report[b]["journal"]) if k.startswith("FINDING")]
        for b in backends
    }
    report["findings"] = findings
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    sys.exit(1 if any(findings.values()) else 0)


if __name__ == "__main__":
    sqlite3.threadsafety  # noqa: B018 - stdlib sqlite3 present (the journal needs it)
    main()
