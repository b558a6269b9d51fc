"""What JSON costs a streamed step, and what a second C parser (msgspec) would take off (issue #19, d).

One harness-shaped tool step (K=4 calls, arguments in 3 fragments: 17 SSE data events, as
`_server.py` sends them), decoded by each parser, then the whole OpenAI stream assembler
(`OpenAIStream.feed_all` + `result()`) against a measurement prototype that decodes each chunk
into msgspec `Struct`s (the shape checks done in C). The prototype is NOT shipped: see
`README.md`, "Streaming, sixth pass". CPU µs per step, min of `--repeats` (`time.process_time`).

    .venv/bin/python benchmarks/bench_json.py [--repeats 30]      # msgspec optional (pip install msgspec)
"""

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _server import message_for, sse_chunks

from agentloop._events import ToolCallDelta
from agentloop._types import Usage
from agentloop._wire.assembler import NO_EVENTS, ToolSlot, parse_short
from agentloop._wire.openai import OpenAIStream

BODY = b'{"model":"bench-s3-k4","messages":[{"role":"user","content":"go"}],"stream":true}'


def step_events(extra_key: bool = False) -> list[tuple[str, str]]:
    """The (event, data) pairs the SSE parser hands the assembler for one tool step."""
    out = []
    for raw in sse_chunks(BODY):
        data = raw[len(b"data: ") : -2].decode()
        if extra_key and data.startswith("{"):  # a router's own field (OpenAI sends "obfuscation")
            data = data[:-1] + ',"obfuscation":"abc"}'
        out.append(("message", data))
    return out


def cpu_us(fn: Callable[[], object], repeats: int, inner: int = 200) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.process_time() - t) / inner)
    return best * 1e6


def typed_stream_class() -> type[OpenAIStream] | None:
    """The prototype: chunks decoded into Structs; any decode or validation error, or a shape
    the typed path does not handle, goes to the shipped path (orjson + Python checks)."""
    try:
        import msgspec
    except ImportError:
        return None
    from msgspec import UNSET, Meta, Raw, Struct, UnsetType

    i64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    # Every field a chunk of the OpenAI wire carries is declared and any other one refused:
    # msgspec skips an unknown field without refusing what orjson refuses in it (1e400).
    opts: dict[str, Any] = {"gc": False, "forbid_unknown_fields": True}

    class Fn(Struct, **opts):
        name: str | None = None
        arguments: str | None = None

    class Call(Struct, **opts):
        index: i64 | UnsetType = UNSET  # type: ignore[valid-type]
        id: str | None = None
        type: Any = None
        function: Fn | None = None

    class Delta(Struct, **opts):
        role: Any = None
        content: str | None = None
        refusal: str | UnsetType | None = UNSET
        tool_calls: list[Call] | None = None

    class Choice(Struct, **opts):
        index: Any = None
        delta: Delta | None = None
        logprobs: Any = None
        finish_reason: str | None = None

    class Chunk(Struct, **opts):
        id: str | None = None
        object: Any = None
        created: Any = None
        model: str | None = None
        choices: list[Choice] | None = None
        usage: Raw = Raw()
        service_tier: Any = None
        system_fingerprint: Any = None

    decode = msgspec.json.Decoder(Chunk).decode

    class Typed(OpenAIStream):
        __slots__ = ()

        def feed_all(self, batch: list[tuple[str, str]]) -> tuple[list[Any], Any]:
            out: list[Any] = []
            for event, data in batch:
                got = None
                if event == "message" and data[:1] == "{":
                    try:
                        got = self.typed(decode(data))
                    except msgspec.DecodeError:  # ValidationError included
                        got = None
                if got is None:
                    got = self.feed(event, data)
                if got:
                    out += got
            return out, None

        def typed(self, c: Any) -> tuple[Any, ...] | None:
            """The chunk's deltas, or None (nothing changed yet) for a shape left to the shipped
            path: a refusal, several calls in one chunk, a call without an index."""
            choice = c.choices[0] if c.choices else None
            d = choice.delta if choice is not None else None
            calls = d.tool_calls if d is not None else None
            if d is not None and (isinstance(d.refusal, str) or (calls and (d.content or len(calls) != 1))):
                return None
            tc = calls[0] if calls else None
            if tc is not None and tc.index is UNSET:
                return None
            self.chunks += 1
            if self.response_id is None:
                self.response_id, self.model = c.id, c.model
            if c.usage:
                u = parse_short(bytes(c.usage))
                if type(u) is dict:
                    self.usage = Usage.from_openai(u)
            if choice is not None and choice.finish_reason:
                self.finish_reason, self.complete = choice.finish_reason, True
            if d is not None and d.content:
                return (self.text_delta(d.content),)
            return NO_EVENTS if tc is None else self.call(tc)

        def call(self, tc: Any) -> tuple[Any, ...]:
            slot, fn = self.slots.get(tc.index), tc.function
            if slot is not None and slot.announced and fn is not None and fn.arguments:
                slot.args.append(fn.arguments)  # the usual: a later fragment of an announced call
                return (ToolCallDelta(self.run_id, self.step, tc.index, None, fn.arguments),)
            if slot is None:
                slot = self.slots[tc.index] = ToolSlot()
            if not slot.id and tc.id:
                slot.id = tc.id
            if fn is not None and not slot.name and fn.name:
                slot.name = fn.name
            ev = self.tool_delta(tc.index, slot, fn.arguments or "" if fn is not None else "")
            return NO_EVENTS if ev is None else (ev,)

    return Typed


def assemble(cls: type[OpenAIStream], batch: list[tuple[str, str]]) -> Callable[[], object]:
    def one() -> object:
        a = cls("run", 1, None)
        a.feed_all(batch)
        return a.result()

    return one


def parsers() -> list[tuple[str, Callable[[Any], Any]]]:
    out: list[tuple[str, Callable[[Any], Any]]] = [("stdlib json", json.loads), ("orjson", orjson.loads)]
    try:
        import msgspec
    except ImportError:
        return out
    return [*out, ("msgspec, untyped", msgspec.json.Decoder().decode)]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    batch = step_events()
    texts = [d for _, d in batch if d.startswith("{")]
    message, finish = message_for(BODY)
    body = json.dumps({"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
    print(f"one tool step: {len(texts)} data events, {sum(map(len, texts))} characters")
    for name, loads in parsers():
        per_step = cpu_us(lambda loads=loads: [loads(t) for t in texts], args.repeats)
        whole = cpu_us(lambda loads=loads: loads(body), args.repeats, 2000)
        print(f"  {name:18s} {per_step:6.1f} µs the step's events   {whole:5.2f} µs the non-streamed body")
    shipped = assemble(OpenAIStream, batch)
    typed = typed_stream_class()
    if typed is None:
        print(
            f"assembler: orjson + Python checks {cpu_us(shipped, args.repeats):.1f} µs (msgspec not installed)"
        )
        return
    assert assemble(typed, batch)() == shipped(), "the prototype must build the same turn"
    odd = step_events(extra_key=True)
    for label, b in (("harness-shaped chunks", batch), ("chunks with one extra field", odd)):
        ours, theirs = (
            cpu_us(assemble(OpenAIStream, b), args.repeats),
            cpu_us(assemble(typed, b), args.repeats),
        )
        print(f"assembler, {label}: orjson + Python {ours:.1f} µs, msgspec Structs {theirs:.1f} µs per step")


if __name__ == "__main__":
    main()
