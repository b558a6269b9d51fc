"""Whole answers of each built-in wire's endpoint, plain and streamed: what `FluxClient.warmup()`'s
rehearsal (`_http/rehearsal.py`) answers its canned requests with. Each wire has a tool call and
a text, so both of the decoder's and the stream assembler's paths run; the streamed ones as the
endpoints send them (a role chunk, the arguments in pieces, a finish, usage, the end marker)."""

from __future__ import annotations

__all__ = ["ANTHROPIC_SAMPLES", "ANTHROPIC_STREAM_SAMPLES", "OPENAI_SAMPLES", "OPENAI_STREAM_SAMPLES"]

OPENAI_SAMPLES = (
    b'{"id":"chatcmpl-rehearsal","object":"chat.completion","model":"rehearsal","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_0","type":"function",'
    b'"function":{"name":"tool","arguments":"{\\"x\\": 1}"}}]},"finish_reason":"tool_calls"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}',
    b'{"id":"chatcmpl-rehearsal","object":"chat.completion","model":"rehearsal","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}',
)
ANTHROPIC_SAMPLES = (
    b'{"id":"msg_rehearsal","type":"message","role":"assistant","model":"rehearsal","content":['
    b'{"type":"tool_use","id":"toolu_0","name":"tool","input":{"x":1}}],"stop_reason":"tool_use",'
    b'"usage":{"input_tokens":12,"output_tokens":5}}',
    b'{"id":"msg_rehearsal","type":"message","role":"assistant","model":"rehearsal","content":['
    b'{"type":"text","text":"done"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"output_tokens":1}}',
)

_CHUNK = b'data: {"id":"chatcmpl-rehearsal","object":"chat.completion.chunk","model":"rehearsal","choices":[{"index":0,'
_USAGE = (
    b'data: {"id":"chatcmpl-rehearsal","object":"chat.completion.chunk","model":"rehearsal","choices":[],'
)
OPENAI_STREAM_SAMPLES = (
    _CHUNK
    + b'"delta":{"role":"assistant","content":null},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{"tool_calls":[{"index":0,"id":"call_0","type":"function","function":'
    b'{"name":"tool","arguments":""}}]},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"x\\""}}]},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{"tool_calls":[{"index":0,"function":{"arguments":": 1}"}}]},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    + _USAGE
    + b'"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}\n\n'
    b"data: [DONE]\n\n",
    _CHUNK
    + b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{"content":"do"},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{"content":"ne"},"finish_reason":null}]}\n\n'
    + _CHUNK
    + b'"delta":{},"finish_reason":"stop"}]}\n\n'
    + _USAGE
    + b'"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}\n\n'
    b"data: [DONE]\n\n",
)

_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_rehearsal","type":"message",'
    b'"role":"assistant","model":"rehearsal","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
)
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
_END = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _delta(kind: bytes, payload: bytes) -> bytes:
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"'
        + kind
        + b'",'
        + payload
        + b"}}\n\n"
    )


def _finish(reason: bytes) -> bytes:
    return (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"'
        + reason
        + b'","stop_sequence":null},"usage":{"output_tokens":5}}\n\n'
    )


ANTHROPIC_STREAM_SAMPLES = (
    _START + b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
    b'{"type":"tool_use","id":"toolu_0","name":"tool","input":{}}}\n\n'
    + _delta(b"input_json_delta", b'"partial_json":"{\\"x\\""')
    + _delta(b"input_json_delta", b'"partial_json":": 1}"')
    + _STOP
    + _finish(b"tool_use")
    + _END,
    _START + b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
    b'{"type":"text","text":""}}\n\n'
    + _delta(b"text_delta", b'"text":"do"')
    + _delta(b"text_delta", b'"text":"ne"')
    + _STOP
    + _finish(b"end_turn")
    + _END,
)
