"""Turn what the zygote reported and what the child left in its memfds into one SandboxOutcome.

Everything read here was written by an untrusted child: it is read with a cap, parsed as JSON
only, and never trusted to say more than "this is my result" (exit status and kills come from the
zygote and the host).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _json
from ._outcome import DEFAULT_TIMEOUT, Limits, SandboxOutcome
from ._protocol import EXIT_CONFINE_FAILED

__all__ = ["Memfds", "classify", "unavailable"]

_HEADER_MAX = 64 << 10  # the child's header line: a message cut at 2000 chars, a traceback at 8000
_NO_CAP = 64 << 20  # what the host reads at most when output_bytes is None
_CHILD_STATUSES = {"ok", "raised", "invalid_result", "memory", "output_limit"}


@dataclass(frozen=True, slots=True)
class Memfds:
    """A call's three memfds, as the host holds them: the arguments then the child's result
    frame, and its stdout and stderr."""

    result: int
    stdout: int
    stderr: int

    def close(self) -> None:
        for fd in (self.result, self.stdout, self.stderr):
            os.close(fd)


def unavailable(reason: str) -> SandboxOutcome:
    return SandboxOutcome("sandbox_unavailable", f"Sandbox unavailable: {reason}", "sandbox_unavailable")


def _read(fd: int, cap: int, *, tail: bool = False) -> tuple[bytes, int]:
    """At most `cap` bytes of a memfd (its head, or its tail for stderr), and its full size."""
    size = os.fstat(fd).st_size
    start = max(0, size - cap) if tail else 0
    return os.pread(fd, min(cap, size), start), size


def _text(data: bytes, cut: bool) -> str:
    text = data.decode("utf-8", "replace")
    return text.rstrip("\ufffd") if cut else text  # a multi-byte character split by the cut


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _mb(n: float) -> str:
    return f"{n:g}"


_Make = Callable[..., SandboxOutcome]  # (status, content, error, truncated=False) -> outcome


def classify(status: dict[str, Any], limits: Limits, fds: Memfds) -> SandboxOutcome:
    """`status` is what the zygote reported (its "killed" set by the host too when the host
    asked for the kill); `fds` hold what the child wrote."""
    cap = limits.output_bytes or _NO_CAP
    stdout_b, stdout_n = _read(fds.stdout, cap)
    stderr_b, stderr_n = _read(fds.stderr, cap, tail=True)
    stdout, stderr = _text(stdout_b, stdout_n > cap), _text(stderr_b, stderr_n > cap)

    def outcome(st: str, content: str, error: str | None, truncated: bool = False) -> SandboxOutcome:
        return SandboxOutcome(st, content, error, truncated, stdout, stderr)

    if status.get("error"):
        return unavailable(str(status["error"]))
    killed = status.get("killed")
    if killed == "timeout":
        secs = limits.timeout or DEFAULT_TIMEOUT
        return outcome("timeout", f"Tool timed out after {secs:g} s and was killed", "timeout")
    if killed in ("cancelled", "closed"):
        return outcome("cancelled", "Tool call was cancelled", "cancelled")
    reported = _from_report(outcome, limits, fds.result, cap)
    if reported is not None:
        return reported
    return _from_exit(outcome, status, limits, stderr)


def _from_report(outcome: _Make, limits: Limits, res: int, cap: int) -> SandboxOutcome | None:
    """The child's own report: a header line, then the result text; None without a valid header."""
    head, size = _read(res, min(_HEADER_MAX, 1 << 20))
    nl = head.find(b"\n")
    header: Any = None
    if nl > 0:
        try:
            header = _json.loads(head[:nl])
        except ValueError:
            header = None
    kind = header.get("s") if isinstance(header, dict) else None
    if kind not in _CHILD_STATUSES:
        return None
    assert isinstance(header, dict)
    etype, emsg = str(header.get("t", "Exception")), str(header.get("m", ""))
    if kind == "ok":
        body_len = size - (nl + 1)
        body = os.pread(res, min(body_len, cap), nl + 1)
        cut = body_len > cap or bool(header.get("cut"))
        text = _text(body, cut)
        if not cut:
            return outcome("ok", text, None)
        total = header.get("n") if isinstance(header.get("n"), int) else body_len
        marker = f"\n…[output truncated: the result has {total:,} characters, the limit is {cap:,} bytes]"
        return outcome("output_limit", text + marker, "output_bytes", True)
    if kind == "raised":
        raised: SandboxOutcome = outcome("raised", f"{etype}: {emsg}" if emsg else etype, etype)
        raised.exc_message, raised.traceback = emsg, str(header.get("tb") or "")
        return raised
    if kind == "invalid_result":
        why = f"Tool returned a value that cannot be encoded as JSON ({etype}: {emsg})"
        return outcome("invalid_result", why, etype)
    if kind == "output_limit":
        why = f"Tool wrote more than the file-size limit ({_mb(limits.file_size_mb or 0)} MB) and was stopped"
        return outcome("output_limit", why, "file_size_mb", True)
    return _memory(outcome, limits)


def _from_exit(outcome: _Make, status: dict[str, Any], limits: Limits, stderr: str) -> SandboxOutcome:
    """No result: the zygote's view of how the child ended decides."""
    if status.get("done"):  # the tool itself sent "done" (it can reach the socket) and was killed
        return outcome("crashed", "Tool process said it was done without writing a result", "no result")
    sig = status.get("signal")
    cpu = float(status.get("cpu") or 0.0)
    # The kernel kills at RLIMIT_CPU by its precise run time; the rusage reported at reaping lags
    # it, on a busy machine and more so under a seccomp filter (measured: 0.77-0.92 s for a 1 s
    # limit beside a CPU hog on 2 cores), so "close to the limit" is half of it, not 90 %.
    if limits.cpu_s and sig in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits.cpu_s * 0.5:
        return outcome("cpu", f"Tool used more than {limits.cpu_s:g} s of CPU time and was killed", "cpu_s")
    if limits.memory_mb and ("MemoryError" in stderr or "out of memory" in stderr.lower()):
        return _memory(outcome, limits)
    if sig:
        name = _signame(int(sig))
        return outcome("crashed", f"Tool process crashed ({name})", name)
    code = status.get("exit")
    if code == EXIT_CONFINE_FAILED:
        return unavailable(f"the child process could not be confined: {stderr.strip()[-300:]}")
    return outcome("crashed", f"Tool process exited with code {code} without a result", f"exit {code}")


def _memory(outcome: _Make, limits: Limits) -> SandboxOutcome:
    limit = f" (limit {limits.memory_mb} MB)" if limits.memory_mb else ""
    return outcome("memory", f"Tool ran out of memory{limit} and was stopped", "memory_mb")
