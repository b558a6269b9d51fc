"""Hostile scenarios that must run in a process of their own: `python hostile_scenarios.py NAME`
prints one JSON line. tests/test_sandbox_hostile.py runs them inside `unshare --pid --fork
--mount-proc` (so that a kill(-1) that escaped could not reach anything outside), optionally
under `setpriv --bounding-set=-sys_admin` (root without CAP_SYS_ADMIN, a typical container).
"""

from __future__ import annotations

import json
import os
import resource
import sys

import anyio
import hostile_tools as ht
from helpers import runs

from agentloop import Agent, InputBudget, Limits, SandboxUnavailableError, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls


def _alive(pid: int) -> bool:
    """Whether it may still run: a killed process may be torn down and reaped a moment after the
    call's outcome; the sandbox promises that it never runs again (see helpers.runs)."""
    return runs(pid)


def _call_uid_processes(fork_server: int | None) -> list[int]:
    """Live processes running as a non-root uid: in this PID namespace, only calls' processes.
    Not the fork server: to kill a call's processes it takes the call's uid as its effective uid
    for one kill(-1), with a real uid of its own (which is what /proc's first Uid field shows)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != fork_server and _alive(int(name)):
            try:
                with open(f"/proc/{name}/status") as f:
                    uid = next(line for line in f if line.startswith("Uid:")).split()[1]
            except (OSError, StopIteration):
                continue
            if uid != "0":
                found.append(int(name))
    return found


def _describe(pid: int) -> str:
    """What a process is, as /proc tells it (a failure message names what was left running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = "".join(
                line for line in f if line.split(":")[0] in ("State", "Uid", "PPid", "SigPnd", "ShdPnd")
            )
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()[:200]
    except OSError as e:
        return f"{pid}: gone while looked at ({e})"
    try:  # where in the kernel it is (root only): says whether it was exiting
        with open(f"/proc/{pid}/stack") as f:
            stack = " < ".join(line.split()[-1] for line in f if line.split())
    except OSError:
        stack = "?"
    return f"{pid}: {cmdline!r} {stat.strip()} {status!r} kernel stack: {stack}"


def _registry(mode: str, limits: Limits) -> ToolRegistry:
    registry = ToolRegistry(sandbox=mode, limits=limits)  # type: ignore[arg-type]
    for fn in (ht.kill, ht.daemon, ht.fork_bomb, ht.trivial, ht.whoami, ht.number, ht.stalk_fork_server):
        registry.register(fn)
    return registry


async def kills(mode: str) -> dict[str, object]:
    registry = _registry(mode, Limits(timeout=30))
    script = [
        tool_calls(call("whoami", {})),
        tool_calls(call("kill", {"pid": os.getpid()}), call("kill", {"pid": 0}), call("kill", {"pid": 1})),
        tool_calls(call("kill", {"pid": -1})),
        tool_calls(call("daemon", {})),
        tool_calls(call("fork_bomb", {"n": 5000})),
        tool_calls(call("trivial", {})),
        text("survived"),
    ]
    async with registry:
        box = registry.sandbox_for(mode).sandbox  # the ProcessSandbox behind the executor
        result = await Agent(client=ScriptedModel(script), tools=registry).run("go")
        zygote = box._server.popen.pid if box._server else None
        zygote_alive = zygote is not None and _alive(zygote)
        left = _call_uid_processes(zygote)  # while the fork server still runs: nothing of any call
    records = [(r.name, r.status, r.content) for r in result.tool_calls]
    daemon = next(r for r in result.tool_calls if r.name == "daemon")
    daemon_pid = int(daemon.content) if daemon.status == "ok" else None
    return {
        "output": result.output,
        "records": records,
        "zygote_alive_after": zygote_alive,
        "daemon_pid": daemon_pid,
        "daemon_alive": mode == "process" and daemon_pid is not None and _alive(daemon_pid),
        "left": left,
        "left_detail": [_describe(pid) for pid in left],  # for the failure message
    }


async def stalkers(mode: str) -> dict[str, object]:
    """Calls that each leave processes SIGKILLing the fork server in a loop: the fork server
    kills them when the call ends, and must give them no moment in which it could be killed."""
    registry = _registry(mode, Limits(timeout=30))
    script = [tool_calls(call("stalk_fork_server", {"stalkers": 2, "nth": i})) for i in range(_STALKED_CALLS)]
    async with registry:
        box = registry.sandbox_for(mode).sandbox
        agent = Agent(
            client=ScriptedModel([*script, text("after")]), tools=registry, max_steps=_STALKED_CALLS + 1
        )
        result = await agent.run("go")
        server = box._server
        zygote = server.popen.pid if server is not None and server.alive() else None
        zygote_alive = zygote is not None and _alive(zygote)
        left = _call_uid_processes(zygote)
    return {
        "output": result.output,
        "statuses": [r.status for r in result.tool_calls],
        "contents": sorted({r.content[:200] for r in result.tool_calls if r.status != "ok"}),
        "zygote_alive": zygote_alive,
        "targets": sorted({r.content for r in result.tool_calls if r.status == "ok"}),
        "left": left,
        "left_detail": [_describe(pid) for pid in left],
    }


_STALKED_CALLS = 40


async def many_calls(mode: str, n: int = 500, nofile: int = 1024) -> dict[str, object]:
    """`n` calls at once under `ulimit -n nofile`: the host admits (nofile - 64) // 4 calls at a
    time (4 fds each in the fork server), the rest queue. The suite runs a smoke size (100 at 256:
    2x past its budget of 48); benchmarks/sandbox_many_calls.py the long run (500 at 1024)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    registry = _registry(mode, Limits(timeout=60))
    script = [tool_calls(*[call("number", {"i": i}) for i in range(n)]), text("after")]
    async with registry:
        # n calls in one message: past the default InputBudget.max_tool_calls (128), on purpose
        budget = InputBudget(max_tool_calls=n)
        result = await Agent(client=ScriptedModel(script), tools=registry, input_budget=budget).run("go")
    statuses: dict[str, int] = {}
    for r in result.tool_calls:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    reasons = sorted({r.content[:150] for r in result.tool_calls if r.status != "ok"})
    return {
        "output": result.output,
        "statuses": statuses,
        "n": len(result.tool_calls),
        "reasons": reasons[:5],
    }


def _world_readable(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


async def no_landlock(mode: str) -> dict[str, object]:
    """The host under a seccomp filter that hides Landlock (EPERM), as some container runtimes do:
    calls still run, without it, and `agentloop doctor` says which cells then do not hold."""
    import tempfile

    from agentloop._sandbox._doctor import cells, probe  # internal unit under test
    from agentloop._sandbox._privs import (  # internal unit under test
        compile_seccomp,
        load_seccomp,
        set_no_new_privs,
    )

    set_no_new_privs()
    load_seccomp(compile_seccomp(["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"]))
    caps = probe()
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        readable = _world_readable(os.path.join(d, "world-readable.txt"), "anyone may read this")
        registry = ToolRegistry(sandbox=mode, limits=Limits(timeout=30))
        registry.register(ht.read_file)
        script = [tool_calls(call("read_file", {"path": readable})), text("done")]
        async with registry:
            result = await Agent(client=ScriptedModel(script), tools=registry).run("go")
    (record,) = result.tool_calls
    return {
        "abi": caps.landlock_abi,
        "cells": cells(caps)[mode],
        "status": record.status,
        "content": record.content,
        "output": result.output,
    }


async def fails_closed(mode: str) -> dict[str, object]:
    """ "isolated" where it cannot run (root without CAP_SYS_ADMIN): registration refuses, and the
    executor asked anyway ends the call as sandbox_unavailable without running the tool."""
    import tempfile

    marker = os.path.join(tempfile.mkdtemp(), "ran-unsandboxed")
    out: dict[str, object] = {"mode": mode}
    registry = ToolRegistry(sandbox=mode)
    try:
        registry.register(ht.fill_dir)
        out["registered"] = True
    except SandboxUnavailableError as exc:
        out["refused"] = str(exc)
    async with registry:
        box = registry.sandbox_for(mode)
        ref = f"{ht.fill_dir.__module__}:{ht.fill_dir.__qualname__}"
        # "process" may write only its scratch (Landlock): there the control writes a relative path
        path = marker if mode == "isolated" else "inside.bin"
        outcome = await box.call(ref, {"path": path, "mb": 1}, Limits(timeout=30))
    out["status"], out["content"] = outcome.status, outcome.content
    out["ran"] = os.path.exists(marker)
    return out


if __name__ == "__main__":
    name, mode, *sizes = sys.argv[1:]  # sizes: many_calls' n and nofile
    try:
        scenarios = {
            "kills": kills,
            "many_calls": many_calls,
            "stalkers": stalkers,
            "no_landlock": no_landlock,
            "fails_closed": fails_closed,
        }
        out = anyio.run(scenarios[name], mode, *map(int, sizes))
    except SandboxUnavailableError as exc:
        out = {"unavailable": str(exc)}
    print(json.dumps(out))
