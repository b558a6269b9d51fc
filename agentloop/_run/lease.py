"""Who holds a run's lease: a process identity that does not change under the process.

A lease used to name its holder by `gethostname()` and pid. A host name can change while the
process runs (DHCP, a container renamed, `hostnamectl`), and then a dead local lease looked like
a live remote one until its `lease_ttl` ran out. So a holder is now named by:

- the machine: the kernel's boot id (`/proc/sys/kernel/random/boot_id`, new at every boot) and
  the pid namespace (`/proc/self/ns/pid`): two containers on one kernel share the boot id but
  not their pids, and each must treat the other's leases as remote;
- the process: its pid and its start time (field 22 of `/proc/<pid>/stat`, in clock ticks since
  boot), so a pid reused by a later process is not mistaken for the holder.

On the same machine a holder that no longer exists is known to be dead at once; a holder on
another machine is alive until its lease expires. Without /proc (macOS) the machine is the host
name and the start time is unknown, which is the old behaviour. The host name is kept for
messages only. The identity is stored in the lease table's `host` column as
`"<hostname>|<machine>|<start time>"`; a bare host name there is a lease written by an older
agentloop and is judged the old way.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from .._budget import is_number
from .._exceptions import ConfigurationError, JournalCorruptError

__all__ = ["Holder", "me", "parse", "alive_here", "checked_ttl", "check_row"]


def checked_ttl(ttl: Any) -> float:
    """`SQLiteJournal(lease_ttl=...)`, refused at construction when it cannot work: a string raised
    a raw TypeError at the run's first write, NaN was reported as a damaged journal (a NOT NULL
    constraint), a huge int as an OverflowError, and 0 or less let another machine take over a
    live run at once."""
    if not is_number(ttl) or ttl <= 0 or (isinstance(ttl, int) and ttl >= 2**53):
        raise ConfigurationError(
            f"SQLiteJournal(lease_ttl=...) must be a positive, finite number of seconds (default 60), got {ttl!r:.40}"
        )
    return float(ttl)


class Holder:
    """A lease holder as stored: host name (for messages), machine id, pid, start time."""

    __slots__ = ("host", "machine", "pid", "start")

    def __init__(self, host: str, machine: str, pid: int, start: str) -> None:
        self.host, self.machine, self.pid, self.start = host, machine, pid, start

    def column(self) -> str:
        return f"{self.host}|{self.machine}|{self.start}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    if not boot:
        return "host:" + socket.gethostname()
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"boot:{boot}/{ns}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc/<pid>/stat, or None when it does not exist."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    fields = raw.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ")"
    return (fields[0], fields[19]) if len(fields) > 19 else None


def me() -> Holder:
    """This process, as a lease holder. Computed per call: a forked child has its own pid."""
    pid = os.getpid()
    stat = _stat(pid)
    return Holder(socket.gethostname(), _machine(), pid, stat[1] if stat else "")


def check_row(path: str, column: Any, pid: Any, expires_at: Any) -> None:
    """A lease row read from the file, checked for the types and ranges agentloop writes. A
    tampered row (an expiry in text, a pid of 0 or -1, which `kill(pid, 0)` takes for a process
    group and finds alive, a pid past the kernel's range) is `JournalCorruptError`, never a raw
    TypeError / OverflowError out of the checks below (it used to be, out of `resume`)."""
    if isinstance(column, str) and type(pid) is int and 0 < pid < 2**31 and is_number(expires_at):
        return
    raise JournalCorruptError(
        f"journal {path} has a damaged run lease (host {column!r:.80}, pid {pid!r:.40}, "
        f"expires_at {expires_at!r:.40}); restore the file from a backup, or delete that row of "
        "agentloop_leases if no process is running the run"
    )


def parse(column: str, pid: int) -> Holder:
    host, sep, rest = column.partition("|")
    if not sep:  # written by agentloop before 0.2: a bare host name
        return Holder(column, "host:" + column, pid, "")
    machine, _, start = rest.partition("|")
    return Holder(host, machine, pid, start)


def alive_here(holder: Holder) -> bool | None:
    """Whether the holder still runs, if it is on this machine; None for another machine."""
    if holder.machine.startswith("host:"):  # no /proc where it was written, or an older agentloop
        return _pid_alive(holder.pid) if holder.machine == "host:" + socket.gethostname() else None
    if holder.machine != _machine():
        return None
    stat = _stat(holder.pid)
    if stat is None:  # gone, or hidden from us (/proc mounted hidepid): ask the kernel
        return _pid_alive(holder.pid)
    state, start = stat
    # A zombie is dead for our purposes; another start time means the pid was reused.
    return state != "Z" and (not holder.start or start == holder.start)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
