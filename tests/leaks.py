"""What a run may leave behind in this process, read from outside (/proc, threading, the loop).

`Probe.take()` before, `probe.assert_back()` after: open fds, threads, child processes (zombies
included) and tasks must be what they were. Worker threads of the backend's thread pool (anyio's
"AnyIO worker thread", trio's "Trio thread" cache, and on asyncio the daemon threads
agentloop runs `def` tools in, "agentloop tool thread") are not counted: the user asked for them by
giving a sync tool or a journal (`to_thread`), they are reused, and trio lets an idle one go only
after 10 s; a thread of any other name that was not there before is a leak. A sync tool's job may
still run in a pool thread after its run was cancelled: agentloop abandons it (Python cannot kill a
thread; `_tools/executors.py`), a documented limit of the "thread" mode, so it is not counted. Threads are compared
by Python identity, not by the native count: another library's native runtime in the same test
worker (Temporal's tokio threads) starts and stops threads of its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sniffio

POOL_THREADS = ("AnyIO worker thread", "Trio thread", "agentloop tool thread")
# the fake router's tasks, and anyio's listener tasks under it
SERVER_TASKS = (
    "agentloop.testing.",
    "anyio.streams.stapled.MultiListener",
    "anyio.abc._sockets.SocketListener",
)

__all__ = ["POOL_THREADS", "Probe", "children", "open_fds", "tasks"]


def open_fds() -> dict[int, str]:
    """This process's open fds and what each points at (the listdir's own fd left out)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listdir itself, closed meanwhile
            continue
    return out


def children() -> list[int]:
    """Child processes of this process, zombies included (a zombie is a child not yet reaped)."""
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return sorted(pids)


def tasks(*, but_servers: bool = False) -> list[str]:
    """Names of the tasks alive in the running event loop (asyncio) or trio's task tree, sorted.
    `but_servers`: without the fake router's (its listener and one task per open connection, which
    lives as long as the client keeps that connection in its pool)."""
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        names = [t.get_name() for t in asyncio.all_tasks()]
    else:
        import trio

        def walk(task: Any) -> list[str]:
            return [task.name] + [
                name for n in task.child_nurseries for t in n.child_tasks for name in walk(t)
            ]

        names = walk(trio.lowlevel.current_root_task())
    if but_servers:
        names = [n for n in names if not n.startswith(SERVER_TASKS)]
    return sorted(names)


def _pool_thread(t: threading.Thread) -> bool:
    """A worker of anyio's or trio's thread pool. trio names its worker after the job while it
    runs one (`"<function> from <task>"`): such a thread is known by its target, trio's worker."""
    if t.name.startswith(POOL_THREADS):
        return True
    target = getattr(t, "_target", None)
    return type(getattr(target, "__self__", None)).__module__ == "trio._core._thread_cache"


def _threads() -> dict[int, str]:
    return {t.ident or 0: t.name for t in threading.enumerate() if not _pool_thread(t)}


@dataclass(frozen=True)
class Probe:
    fds: dict[int, str]
    threads: dict[int, str]
    children: list[int]

    @classmethod
    def take(cls) -> Probe:
        return cls(open_fds(), _threads(), children())

    def leaks(self) -> list[str]:
        """What is open or alive now that was not when this probe was taken."""
        now = Probe.take()
        out = []
        new_fds = {fd: what for fd, what in now.fds.items() if self.fds.get(fd) != what}
        if new_fds:
            out.append(f"fds opened and not closed: {new_fds}")
        new_threads = {i: n for i, n in now.threads.items() if i not in self.threads}
        if new_threads:
            out.append(f"threads started and still alive: {sorted(new_threads.values())}")
        new_children = sorted(set(now.children) - set(self.children))
        if new_children:
            out.append(f"child processes alive or unreaped: {new_children}")
        return out

    def assert_back(self) -> None:
        assert self.leaks() == []
