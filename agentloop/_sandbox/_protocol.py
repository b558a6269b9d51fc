"""What the host, the fork server ("zygote") and a forked child agree on.

Host -> zygote, over a SOCK_SEQPACKET control socket, one JSON message each:
  {"op": "call", "id", "ref", "limits", ...} with SCM_RIGHTS fds [status socket, result memfd,
  stdout memfd, stderr memfd]; the arguments JSON is pre-written into the result memfd.
  {"op": "kill", "id", "reason"}: kill that call's processes (timeout / cancellation).
  Either may carry "took": [sid, ...], the offers handed a call since the last message (below).
Zygote -> host, over the same control socket (read by the host without blocking, as a call starts):
  {"op": "spare", "sid", "pid", "tools", "scratch_mb", "sized"} with SCM_RIGHTS fds [call socket,
  status socket, result memfd, stdout memfd, stderr memfd]: an offered spare (`_offers`). The host
  writes the arguments into the result memfd and sends {"ref", "limits"} on the call socket, once
  (no fds; it then closes it); the call's id is -sid, its status frames come on the status socket,
  and the "P" frame is never sent (its pid came with the offer; its timeout runs from the send).
Zygote -> host, over the call's own SOCK_SEQPACKET status socket:
  b"Q"         the call waits for a slot (max_processes): its timeout starts with its "P"
  b"P" + pid   the child runs (sent at once after a "Q"; else only if it still runs ~2 ms after
               it started: the host's timeout runs from its send, and a short call's pid comes
               with its "S", one wake-up of the host less)
  b"S" + JSON  the outcome (done, exit code / signal / CPU seconds / why it was killed; "pid"
               when no "P" was sent)
Child -> host, through the result memfd: one JSON header line, then the raw result text.
Child -> zygote, over its own socket: b"D" once the result is written. The zygote then kills
  every process of the call (by its uid, or its process group) and sends b"S" at once; reaping
  the child (and tearing down its namespaces) comes after, off the call's critical path.

Nothing a child writes is ever unpickled; the host reads at most the output cap of every memfd.
"""

from __future__ import annotations

import struct

__all__ = [
    "RESULT_FD",
    "EXIT_CONFINE_FAILED",
    "NOBODY",
    "SCRATCH_IN_SANDBOX",
    "DONE",
    "FRAME_STARTED",
    "FRAME_QUEUED",
    "FRAME_STATUS",
    "PID",
    "BOOT",
    "base_env",
]

RESULT_FD = 3  # the result memfd's number in the child
EXIT_CONFINE_FAILED = 71  # the child could not confine itself and did not run the tool
NOBODY = 65534  # uid/gid of isolated children when the host runs as root
SCRATCH_IN_SANDBOX = "/scratch"  # tmpfs inside bubblewrap that holds the per-call scratch dirs

DONE = b"D"
FRAME_STARTED = b"P"
FRAME_QUEUED = b"Q"
FRAME_STATUS = b"S"
PID = struct.Struct("!i")

# The zygote is started with `python -I -c BOOT CONFIG`: -I keeps the host's PYTHON* variables and
# user site out; the host's sys.path is installed before anything of ours is imported so that
# tool modules (tests included) import exactly as they do on the host.
BOOT = (
    "import sys, json; cfg = json.loads(sys.argv[1]); sys.path[:] = cfg['path']; "
    "from agentloop._sandbox._zygote import main; main(cfg)"
)

_FORWARDED = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


def base_env(host_env: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """The tiny allowlisted environment of the zygote and every child (no secrets)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({k: host_env[k] for k in _FORWARDED if k in host_env})
    env.update(extra or {})
    return env
