"""Token usage: what the endpoint reported, summed over a run's model requests, split by model.

Its own module because it is arithmetic the loop does at every step (`make_usage` skips the frozen
dataclass `__init__`), and it is read from two wires' reports; `_types` re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Usage", "make_usage", "note", "openai_usage", "tokens", "at_least"]


class _NoSplit(Mapping[str, Any]):
    """The empty `Usage.by_model`: one shared, immutable instance, so no dict is built per Usage."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


_NO_SPLIT: Mapping[str, Any] = _NoSplit()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as reported by the endpoint, summed over a run's model requests.

    `prompt_tokens` (alias `input_tokens`) counts every input token, cached ones included;
    `cache_read_tokens` / `cache_write_tokens` say how many of them were read from / written to
    the provider's prompt cache (OpenAI `prompt_tokens_details.cached_tokens`; Anthropic
    `cache_read_input_tokens` / `cache_creation_input_tokens`). `by_model` splits a run's usage
    by the model that answered (the router's resolved model when it reports one, e.g. what
    `flux-auto` routed to), each entry a `Usage` without its own split.
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    by_model: Mapping[str, Usage] = field(default=_NO_SPLIT, compare=False)  # never mutated; not in ==

    @property
    def input_tokens(self) -> int:
        return self.prompt_tokens

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        a, b = self.by_model, other.by_model
        if not b:
            split = a
        elif not a:
            split = b
        else:  # rare: adding two totals that were both split
            split = dict(a)
            for k, v in b.items():
                split[k] = split[k] + v if k in split else v
        return make_usage(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            split,
        )

    def for_model(self, model: str) -> Usage:
        """This (one request's) usage, attributed to `model` in `by_model`."""
        flat = self if not self.by_model else Usage.from_data(self.to_data())
        return Usage(
            self.requests, self.prompt_tokens, self.completion_tokens, self.total_tokens,
            self.cache_read_tokens, self.cache_write_tokens, {model: flat},
        )  # fmt: skip

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data (journal, `RunResult.to_json`); `from_data` reads it back."""
        data: dict[str, Any] = {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cache_read_tokens or self.cache_write_tokens:
            data["cache_read_tokens"] = self.cache_read_tokens
            data["cache_write_tokens"] = self.cache_write_tokens
        if self.by_model:
            data["by_model"] = {k: v.to_data() for k, v in self.by_model.items()}
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Usage:
        """The inverse of `to_data` (also reads the data of older versions, which lack the new keys)."""
        split = data.get("by_model") or {}
        return cls(
            int(data.get("requests", 0)),
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
            int(data.get("total_tokens", 0)),
            int(data.get("cache_read_tokens", 0)),
            int(data.get("cache_write_tokens", 0)),
            {str(k): cls.from_data(v) for k, v in split.items()} if split else _NO_SPLIT,
        )

    @classmethod
    def from_openai(cls, raw: Any, problems: list[str] | None = None) -> Usage:
        """An OpenAI `usage` object → Usage. Absent (`None`) counts as zero tokens; a count that is
        not one (see `tokens`) raises `ValueError`, or, given a `problems` list, counts as 0 and is
        noted there (for a `Model` of your own: pass them on as `ModelTurn.usage_problems`, and
        the run decides as it does for FluxClient's answers).

        `total_tokens` is never below prompt + completion: a router cannot under-report the total the
        token budget reads."""
        noted: list[str] = [] if problems is None else problems
        usage = openai_usage(raw, noted)
        if problems is None and noted:
            raise ValueError(noted[0])
        return usage


def make_usage(
    requests: int, prompt: int, completion: int, total: int, read: int, write: int, split: Mapping[str, Usage]
) -> Usage:
    """`Usage(...)` without the frozen dataclass `__init__` (a call and a global lookup per field):
    the loop adds usages at every step."""
    u = _new(Usage)
    _set(u, "requests", requests)
    _set(u, "prompt_tokens", prompt)
    _set(u, "completion_tokens", completion)
    _set(u, "total_tokens", total)
    _set(u, "cache_read_tokens", read)
    _set(u, "cache_write_tokens", write)
    _set(u, "by_model", split)
    return u


_new, _set = object.__new__, object.__setattr__


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def openai_usage(raw: Any, problems: list[str]) -> Usage:
    """`Usage.from_openai`, where a count that is not one counts as 0 and is noted in `problems`
    (the wire reports it; the loop decides: refused under a token budget, else a warning)."""
    if raw is None:
        return Usage(requests=1)
    if not isinstance(raw, dict):
        note(problems, f"usage is a JSON {type(raw).__name__}, not an object")
        return Usage(requests=1)
    p = tokens(raw.get("prompt_tokens", raw.get("input_tokens")), "prompt_tokens", problems)
    c = tokens(raw.get("completion_tokens", raw.get("output_tokens")), "completion_tokens", problems)
    t = max(tokens(raw.get("total_tokens"), "total_tokens", problems), p + c)
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0  # not budgeted
    return Usage(1, p, c, t, min(cached, p))


MAX_PROBLEMS = 8  # a stream may repeat the same bad report in every chunk: a few distinct ones are enough


def note(problems: list[str], problem: str) -> None:
    if problem not in problems and len(problems) < MAX_PROBLEMS:
        problems.append(problem)


def tokens(value: Any, name: str, problems: list[str]) -> int:
    """One reported token count: absent (`None`) is 0; a whole number, or a finite non-negative
    float rounded up, counts as sent, however large (so `max_total_tokens` trips on it).

    Anything else (negative, NaN, infinite, a bool, text) counts as 0 and is noted in `problems`
    (the value clipped, text never shown): under `RunLimits.max_total_tokens` the loop refuses the
    answer, since counting it as 0 would let a router walk past the budget.
    """
    if value is None:
        return 0
    kind = type(value)
    if kind is int and value >= 0:  # `type is`: a bool is not a count
        return int(value)
    if isinstance(value, float) and value >= 0 and not math.isinf(value):  # NaN fails `>= 0`
        return math.ceil(value)
    shown = repr(value) if kind in (int, float, bool) else f"a JSON {kind.__name__}"
    note(problems, f"usage.{name} is {shown[:40]}, not a token count")
    return 0


def at_least(old: Usage | None, new: Usage) -> Usage:
    """A stream's later usage report: each count the larger of the two, so a report can only
    raise what a request is counted (a later smaller report never lowers it)."""
    if old is None:
        return new
    return make_usage(
        max(old.requests, new.requests),
        max(old.prompt_tokens, new.prompt_tokens),
        max(old.completion_tokens, new.completion_tokens),
        max(old.total_tokens, new.total_tokens),
        max(old.cache_read_tokens, new.cache_read_tokens),
        max(old.cache_write_tokens, new.cache_write_tokens),
        new.by_model,
    )
