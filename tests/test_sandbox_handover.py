"""Offered spares: the fork server hands each spare's call socket to the host, which gives a call
straight to it; the outcome still comes from the fork server once it has killed the call.

Attacks on the new channel: a tool forging an outcome or reaching other fds, a spare killed before
or while it takes a call, the host cancelled right after the hand-over, `max_processes` with
calls handed over, and fds leaking from the host, the fork server or into the tool.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator

import anyio
import pytest
from helpers import runs

from agentloop import Limits, SandboxUnavailableError
from agentloop._sandbox import ProcessSandbox, SandboxOutcome  # internal unit under test
from agentloop._sandbox._handover import _read_offers  # internal unit under test
from agentloop._sandbox._server import Server  # internal unit under test

pytestmark = pytest.mark.anyio

T = "sandbox_tools:"
H = "hostile_tools:"
_O_CLOEXEC = 0o2000000


def _isolated_available() -> bool:
    try:
        ProcessSandbox(isolated=True).check_available()
    except SandboxUnavailableError:
        return False
    return True


MODES = [
    False,
    pytest.param(True, marks=pytest.mark.skipif(not _isolated_available(), reason="isolated unavailable")),
]


# Every tool these tests call, each called once by `warm`: the fork server offers spares that
# know the tools it has loaded, and a call whose tool an offer does not know goes through it.
WARM = [
    (T + "trivial", {}),
    (T + "echo", {"text": "w"}),
    (T + "boom", {"message": "w"}),
    (T + "block_forever", {}),  # times out
    (H + "forge_outcome", {}),
    (H + "other_calls", {"first_uid": 0, "count": 0}),
    (T + "scratch_mb", {}),
]


@contextlib.asynccontextmanager
async def warm(isolated: bool, **kwargs: object) -> AsyncIterator[ProcessSandbox]:
    """A sandbox whose fork server has loaded every tool of `WARM` (a call of each; twice: in
    "isolated" the first call of tests/hostile_tools.py restarts the fork server with that file
    bound too, and the new one has loaded none of the others)."""
    async with ProcessSandbox(isolated=isolated, **kwargs) as sb:  # type: ignore[arg-type]
        for ref, args in WARM * 2:
            out = await sb.call(ref, args, Limits(timeout=0.5 if "block" in ref else 30))
            assert out.status in ("ok", "raised", "timeout"), out
        assert sb._server is not None
        sb._server.handed = 0  # counts the test's own calls handed to an offer from here on
        yield sb


async def offered(sb: ProcessSandbox, n: int = 1) -> list[int]:
    """Wait (on the control socket, no sleeping) until the host holds `n` offers that know
    every tool of `WARM` (older ones are discarded, as a call would): their pids."""
    server = sb._server
    assert server is not None and server.rx is not None
    with anyio.fail_after(120):  # a guard against a hang, not a timing assertion
        return await _wait_offers(server, n)


async def _wait_offers(
    server: Server, n: int, refs: frozenset[str] = frozenset(r for r, _ in WARM)
) -> list[int]:
    assert server.rx is not None
    while True:
        with server.lock:
            _read_offers(server)
            for stale in [o for o in server.offers if not refs <= o.tools]:
                server.offers.remove(stale)
                stale.close()
            if len(server.offers) >= n:
                return [o.pid for o in server.offers]
        await anyio.wait_readable(server.rx)


def _fds(pid: int | str) -> dict[int, str]:
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return found


def _cloexec(fd: int) -> bool:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return bool(int(next(line for line in f if line.startswith("flags:")).split()[1], 8) & _O_CLOEXEC)


async def _exited(pid: int) -> None:
    """Wait until process `pid` has exited (a pidfd turns readable: no sleeping)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


# --- the hand-over ---------------------------------------------------------------------------------


@pytest.mark.parametrize("isolated", MODES)
async def test_a_warm_call_is_handed_to_an_offered_spare(isolated: bool) -> None:
    async with warm(isolated) as sb:
        pids = await offered(sb)
        started: list[int] = []
        out = await sb.call(T + "echo", {"text": "hi", "n": 2}, Limits(timeout=30), on_started=started.append)
        assert out.status == "ok" and json.loads(out.content)["text"] == "hihi", out
        assert sb._server is not None and sb._server.handed == 1
        assert started == pids[:1]  # on_started once, with the spare's pid


async def test_calls_of_mixed_scratch_sizes_are_handed_to_offers_each_with_its_own_size() -> None:
    """Regression: an offer's tmpfs was sized for the fork server's last call, and a call of
    another size discarded every offer and went through the fork server (a fork on its path);
    with two tools of different sizes, every call did. The spare now resizes it for its call."""
    async with ProcessSandbox() as sb:
        first = await sb.call(T + "scratch_mb", {}, Limits(timeout=30))  # the fork server loads it
        assert first.status == "ok" and sb._server is not None and sb._server.rx is not None, first
        sb._server.handed = 0
        sizes = [16, 48, 16, 48, 100, 16]
        got = []
        for mb in sizes:
            with anyio.fail_after(120):  # a guard against a hang, not a timing assertion
                await _wait_offers(sb._server, 1, frozenset({T + "scratch_mb"}))
            out = await sb.call(T + "scratch_mb", {}, Limits(timeout=30, scratch_mb=mb))
            assert out.status == "ok", out
            got.append(int(out.content))
        if got[0] > 1000:
            pytest.skip("no tmpfs of the call's own here (not root with CAP_SYS_ADMIN)")
        assert got == sizes  # each call's own size, never the previous call's
        assert sb._server is not None and sb._server.handed == len(sizes)  # no call took the long way


@pytest.mark.parametrize("isolated", MODES)
async def test_a_tool_cannot_forge_an_outcome_nor_reach_another_processs_fds(isolated: bool) -> None:
    async with warm(isolated) as sb:
        await offered(sb)
        out = await sb.call(H + "forge_outcome", {}, Limits(timeout=30))
        assert sb._server is not None and sb._server.handed == 1
        # The outcome is the tool's own result, not the frame it forged on every socket it had.
        assert out.status == "ok", out
        report = json.loads(out.content)
        assert report["foreign"] == []  # no fd of the host, the fork server, a spare or a call
        own = report["own"]
        # It holds its three memfds and the one "done" socket (which ends only its own call):
        # no end of the call socket it was handed the call on, nor of any status socket.
        assert sum(t.startswith("socket:") for t in own) == 1, own
        assert sum(t.startswith("/memfd:agentloop-") for t in own) == 3, own
        assert (await sb.call(T + "trivial", {}, Limits(timeout=30))).status == "ok"


# --- spares that die --------------------------------------------------------------------------------


@pytest.mark.parametrize("isolated", MODES)
async def test_a_spare_killed_before_the_hand_over_is_passed_over(isolated: bool) -> None:
    async with warm(isolated) as sb:
        await offered(sb)
        assert sb._server is not None
        dead = [o.pid for o in sb._server.offers]
        for offer in list(sb._server.offers):
            host_pid = _host_pid(sb, offer.pid, isolated)
            assert host_pid is not None  # an offered spare waits for its call
            os.kill(host_pid, signal.SIGKILL)
            await _exited(host_pid)
        out = await sb.call(T + "echo", {"text": "still"}, Limits(timeout=30))
        assert out.status == "ok" and json.loads(out.content)["text"] == "still", out
        # Each dead offer was passed over (the send to it fails: nothing of the call reached it);
        # the call ran on a fresh offer or through the fork server.
        assert not set(dead) & {o.pid for o in sb._server.offers}


@pytest.mark.parametrize("isolated", MODES)
async def test_a_spare_killed_while_it_takes_the_call_ends_that_call_only(isolated: bool) -> None:
    async with warm(isolated) as sb:
        for _ in range(3):
            await offered(sb)

            def kill_it(pid: int) -> None:
                target = _host_pid(sb, pid, isolated)
                if target is not None:  # None: the call already ran and its process is gone
                    with contextlib.suppress(ProcessLookupError):  # ...or went since
                        os.kill(target, signal.SIGKILL)  # just handed the call

            out = await sb.call(T + "echo", {"text": "x"}, Limits(timeout=30), on_started=kill_it)
            # Killed before it ran the tool, or (the kill landed late) after: one outcome either way.
            assert out.status in ("crashed", "ok"), out
            if out.status == "crashed":
                assert "SIGKILL" in (out.error or "") + out.content, out
        assert sb._server is not None and sb._server.handed == 3
        assert (await sb.call(T + "trivial", {}, Limits(timeout=30))).status == "ok"


def _host_pid(sb: ProcessSandbox, pid: int, isolated: bool) -> int | None:
    """`pid` as the host sees it ("isolated": the fork server's namespace names it); None when no
    such process is left (a fast call is done and killed before the search reaches it)."""
    if not isolated:
        return pid
    assert sb._server is not None
    bwrap = sb._server.popen.pid
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ns = [int(x) for x in line.split()[1:]]
                    if len(ns) >= 2 and ns[1] == pid and _below(int(entry), bwrap):
                        return int(entry)
    return None


def _below(pid: int, root: int) -> bool:
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        if pid == root:
            return True
    return False


# --- the host cancelled ----------------------------------------------------------------------------


@pytest.mark.parametrize("isolated", MODES)
async def test_the_host_cancelled_right_after_the_hand_over_kills_the_call(isolated: bool) -> None:
    async with warm(isolated) as sb:
        await offered(sb)
        pids: list[int] = []
        with anyio.CancelScope() as scope:

            def cancel_now(pid: int) -> None:
                host_pid = _host_pid(sb, pid, isolated)
                assert host_pid is not None  # block_forever: it cannot be done
                pids.append(host_pid)
                scope.cancel()  # before the spare has even read its call, most likely

            await sb.call(T + "block_forever", {}, Limits(timeout=60), on_started=cancel_now)
        assert scope.cancelled_caught and len(pids) == 1
        assert sb._server is not None and sb._server.handed == 1
        assert not runs(pids[0])
        assert (await sb.call(T + "trivial", {}, Limits(timeout=30))).status == "ok"


async def test_a_handed_call_times_out_from_its_send() -> None:
    async with warm(False) as sb:
        await offered(sb)
        out = await sb.call(T + "block_forever", {}, Limits(timeout=0.3))
        assert out.status == "timeout", out
        assert sb._server is not None and sb._server.handed == 1


# --- max_processes ----------------------------------------------------------------------------------


async def test_a_call_past_max_processes_queues_behind_a_handed_call() -> None:
    async with warm(False, max_processes=1) as sb:
        await offered(sb)
        first_started = anyio.Event()
        second: list[int] = []
        outcomes: dict[str, SandboxOutcome] = {}

        async def then_second(blocker: anyio.CancelScope) -> None:
            await first_started.wait()
            async with anyio.create_task_group() as inner:

                async def run_second() -> None:
                    uids = {"first_uid": sb._spec.uids.start, "count": len(sb._spec.uids)}
                    outcomes["second"] = await sb.call(
                        H + "other_calls", uids, Limits(timeout=5), on_started=second.append
                    )

                inner.start_soon(run_second)
                await anyio.wait_all_tasks_blocked()
                assert second == []  # the fork server counts the handed call: the second waits
                blocker.cancel()  # the first is killed: its slot frees once it is reaped

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as blocker:
                tg.start_soon(then_second, blocker)
                await sb.call(
                    T + "block_forever", {}, Limits(timeout=60), on_started=lambda _: first_started.set()
                )
        assert sb._server is not None and sb._server.handed == 1  # the first; the second queued
    assert outcomes["second"].status == "ok", outcomes["second"]
    assert json.loads(outcomes["second"].content) == []  # it ran only once the first was gone
    assert len(second) == 1


# --- fds ----------------------------------------------------------------------------------------------


async def test_no_fd_of_the_sandbox_outlives_it_in_the_host_and_offers_are_close_on_exec() -> None:
    before = _fds("self")
    async with warm(False) as sb:
        assert sb._server is not None
        for i in range(12):
            await offered(sb)
            for o in sb._server.offers:  # no program the host starts inherits an offer
                fds = (o.call.fileno(), o.status.fileno(), o.fds.result, o.fds.stdout, o.fds.stderr)
                assert all(_cloexec(fd) for fd in fds), fds
            ref = ("trivial", "boom", "block_forever")[i % 3]
            args = {"message": "m"} if ref == "boom" else {}
            await sb.call(T + ref, args, Limits(timeout=0.2))
        held = set(_fds("self")) - set(before)
        # The control socket (twice: blocking sends, non-blocking reads), the fork server's
        # stderr, and at most two offers of five fds each.
        assert len(held) <= 3 + 2 * 5, held
        zygote = sb._server.popen.pid
        await offered(sb, 2)
        zygote_fds = len(_fds(zygote))
        for _ in range(20):
            await offered(sb)
            await sb.call(T + "trivial", {}, Limits(timeout=30))
        await offered(sb, 2)
        # No fd per call is left behind in the fork server (a spare being forked holds 9 more).
        assert len(_fds(zygote)) <= zygote_fds + 9, (zygote_fds, _fds(zygote))
    assert set(_fds("self")) <= set(before), set(_fds("self")) - set(before)
