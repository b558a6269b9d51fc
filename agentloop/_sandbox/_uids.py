"""The per-call uids of a root fork server: one unprivileged uid per running call, so the call
cannot touch the host, the fork server or a sibling, RLIMIT_NPROC applies to it, and every
process it leaves behind is found, and killed, by its uid.

Killing is synchronous and cheap: one kill(-1) with the call's uid as the effective uid reaches
every process of the call at once, even one that left the process group with setsid or is forking at that moment (the
kernel refuses a fork whose parent has a kill pending). That is what a call's outcome waits for.
What may come later is the bookkeeping: a uid goes back to the pool only once no process of it is
left (with a PID namespace per call, when the call's PID 1 is reaped; without one, when /proc
shows none), and until then it is "dirty" and swept again.
"""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import Iterable

__all__ = ["UidPool", "kill_uid", "busy_uids"]


def kill_uid(uid: int, signaller: int) -> None:
    """SIGKILL every process of `uid`: the fork server, as root, borrows the uid as its effective
    uid for one kill(-1), so the kernel lets it signal that uid's processes only. Its real uid is
    then `signaller`, a uid of its own that no process has: the kernel lets a process signal
    another whose real or saved uid is its own, so with the call's uid as its real uid any
    process of the call could SIGKILL the fork server in that moment (and did: the stalkers of
    tests/test_sandbox_hostile.py). (kill(-1) reports success even when it
    signalled nothing, so whether any is left is asked of /proc: `busy_uids`.)"""
    if uid <= 0 or signaller <= 0 or signaller == uid or os.geteuid() != 0:
        return
    os.setresuid(signaller, uid, 0)  # the saved uid 0 lets us come back
    try:
        if os.getresuid() == (signaller, uid, 0):  # never kill(-1) as anyone else
            os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.setresuid(0, 0, 0)


def busy_uids(uids: Iterable[int]) -> set[int]:
    """Which of `uids` still have a process (zombies included), in one pass over /proc. /proc/<pid>
    of a process that changed uid is owned by root (it is not dumpable), so the Uid line of its
    status is read instead."""
    want = {str(u) for u in uids}
    found: set[int] = set()
    if not want:
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        found.update(int(u) for u in set(line.split()[1:]) & want)
                        break
        except OSError:
            pass
    return found


class UidPool:
    """The uids of one fork server: free ones, and dirty ones (killed, not yet known empty).
    The first uid of the range is the fork server's own real uid while it kills (`kill_uid`),
    never a call's. `namespaced`: every call is PID 1 of a PID namespace of its own, so its uid
    is empty once that process is reaped (the kernel kills and reaps the whole namespace first)."""

    def __init__(self, start: int, count: int, *, namespaced: bool) -> None:
        self.signaller = start
        self.free: collections.deque[int] = collections.deque(range(start + 1, start + count))
        self.dirty: set[int] = set()
        self.enabled = count > 1
        self.namespaced = namespaced

    def kill(self, uid: int) -> None:
        """SIGKILL every process of the call uid `uid` (see `kill_uid`)."""
        kill_uid(uid, self.signaller)

    def take(self) -> int:
        """A free uid (0 when the pool is off: not root)."""
        return self.free.popleft() if self.free else 0

    def exhausted(self) -> bool:
        return self.enabled and not self.free

    def release(self, uid: int) -> None:
        """The call's main process was reaped. Its other processes were killed before its
        outcome was sent; the uid is reused once none is left."""
        if not uid:
            return
        if self.namespaced:
            self.free.append(uid)
            return
        self.kill(uid)  # again: cheap, and the uid may have been released without a kill
        self.dirty.add(uid)

    def sweep(self) -> bool:
        """Kill what is left of the dirty uids, free the empty ones; True if some stay dirty.
        (Their processes are dying: the fork server, a subreaper, reaps them as they come.)"""
        if not self.dirty:
            return False
        busy = busy_uids(self.dirty)
        for uid in self.dirty - busy:
            self.dirty.discard(uid)
            self.free.append(uid)
        for uid in busy:
            self.kill(uid)
        return bool(self.dirty)
