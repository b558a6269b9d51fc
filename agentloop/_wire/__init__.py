"""The wire codecs, and `WIRES`: the registry `FluxClient` picks its codec from.

A wire is a pure codec (the `Wire` seam in `_seams.py`: no I/O). Adding one touches this package
only: a module with the codec, and one `WireSpec` entry below saying how to build it, where its
default endpoint is and which base URLs speak it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._seams import Wire
from .anthropic import DEFAULT_MAX_TOKENS, AnthropicWire
from .openai import OpenAIWire
from .samples import ANTHROPIC_SAMPLES, ANTHROPIC_STREAM_SAMPLES, OPENAI_SAMPLES, OPENAI_STREAM_SAMPLES

__all__ = [
    "DEFAULT_ANTHROPIC_BASE_URL",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "WIRES",
    "WireSpec",
    "sniff_wire",
]

DEFAULT_BASE_URL = "https://api.fluxrouter.ai/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.fluxrouter.ai/anthropic"


@dataclass(frozen=True, slots=True)
class WireSpec:
    """How `FluxClient(wire=name)` gets its codec.

    - `build(max_tokens)`: a fresh codec (`max_tokens` is what a wire that requires it sends when
      the agent's `model_settings` has none; others ignore it).
    - `default_base_url`: used when neither `base_url=` nor `$FLUX_BASE_URL` is given.
    - `url_marker`: a base URL ending in it (or containing it followed by `/`) speaks this wire
      when `wire=` is not given, e.g. `/anthropic`. None: only by name.
    - `endpoint`: the path the codec appends; a base URL pasted with it is refused with the root to
      pass instead (it would 404 with the path doubled).
    - `samples`: whole answers of this wire's endpoint (a tool call, a text) that
      `FluxClient.warmup()` decodes while it runs the request path on canned bytes (`_http/rehearsal.py`);
      none: the rehearsal is skipped. `stream_samples`: the same answers streamed (the SSE
      body); none: streamed requests are not rehearsed. Both in `samples.py`.
    """

    name: str
    build: Callable[[int], Wire]
    default_base_url: str
    url_marker: str | None
    endpoint: str
    samples: tuple[bytes, ...] = ()
    stream_samples: tuple[bytes, ...] = ()


WIRES: dict[str, WireSpec] = {
    spec.name: spec
    for spec in (
        WireSpec(
            "openai",
            lambda _max_tokens: OpenAIWire(),
            DEFAULT_BASE_URL,
            None,
            "/chat/completions",
            OPENAI_SAMPLES,
            OPENAI_STREAM_SAMPLES,
        ),
        WireSpec(
            "anthropic",
            lambda max_tokens: AnthropicWire(max_tokens=max_tokens),
            DEFAULT_ANTHROPIC_BASE_URL,
            "/anthropic",
            "/messages",
            ANTHROPIC_SAMPLES,
            ANTHROPIC_STREAM_SAMPLES,
        ),
    )
}


def sniff_wire(base_url: str) -> str:
    """The wire a base URL speaks when `wire=` is not given: by its marker, else OpenAI."""
    for spec in WIRES.values():
        marker = spec.url_marker
        if marker and (base_url.endswith(marker) or marker + "/" in base_url):
            return spec.name
    return "openai"
