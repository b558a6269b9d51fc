"""The "process" and "isolated" sandbox modes, one test per guarantee, on asyncio and trio.

The hostile tools live in tests/sandbox_tools.py (the fork server imports them by name). One
sandbox per mode is shared by the whole module: it is used from both backends' event loops.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import socket
from collections.abc import Callable, Iterator

import anyio
import pytest
import sandbox_tools
from helpers import runs

from agentloop import ConfigurationError, Limits, SandboxUnavailableError, ToolDefinitionError
from agentloop._sandbox import ProcessSandbox, SandboxOutcome, _host  # internal unit under test

pytestmark = pytest.mark.anyio

T = "sandbox_tools:"
ROOT = os.geteuid() == 0


def _bwrap_missing() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    try:
        ProcessSandbox(isolated=True).check_available()
    except SandboxUnavailableError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def process_sb() -> Iterator[ProcessSandbox]:
    sb = ProcessSandbox(max_processes=4)
    sb.check_available()
    yield sb
    anyio.run(sb.aclose)


@pytest.fixture(scope="module")
def isolated_sb() -> Iterator[ProcessSandbox]:
    reason = _bwrap_missing()
    if reason:
        pytest.skip(f"isolated mode unavailable: {reason}")
    sb = ProcessSandbox(isolated=True, max_processes=4)
    yield sb
    anyio.run(sb.aclose)


@pytest.fixture(params=["process", "isolated"])
def sb(request: pytest.FixtureRequest) -> ProcessSandbox:
    return request.getfixturevalue(f"{request.param}_sb")  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    """Not "exists": a killed process may take a moment to be torn down and reaped after the
    outcome; what the sandbox promises is that it never runs again (see helpers.runs)."""
    return runs(pid)


def _descendants(root: int) -> set[int]:
    """Every live process below `root`, by walking /proc's parent links."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _zygote_pid(sb: ProcessSandbox) -> int:
    assert sb._server is not None
    return sb._server.popen.pid


def _nspids(pid: int) -> list[int]:
    """The pid in each nested PID namespace, outermost (the host's) first; [] once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):  # gone (ESRCH: it died as it was opened)
        return []
    return [pid]


# --- results --------------------------------------------------------------------------------------


async def test_ok_round_trip(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "echo", {"text": "hi", "n": 2}, Limits())
    assert (out.status, out.content, out.error, out.truncated) == (
        "ok",
        '{"text":"hihi","pid_is_child":true}',
        None,
        False,
    )
    out = await sb.call(T + "shout", {"text": "hé"}, Limits())
    assert (out.status, out.content) == ("ok", "HÉ")  # str results go to the model as is
    out = await sb.call(T + "async_add", {"a": 2, "b": 3}, Limits())
    assert (out.status, out.content) == ("ok", "5")


async def test_enum_and_dataclass_arguments_are_bound(process_sb: ProcessSandbox) -> None:
    schema = pytest.importorskip("agentloop._schema")
    if not hasattr(schema, "function_schema"):
        pytest.skip("agentloop._schema.function_schema has not landed yet")
    out = await process_sb.call(T + "describe", {"color": "blue", "point": {"x": 1, "y": 2}}, Limits())
    assert (out.status, out.content) == ("ok", "BLUE at 1,2")


async def test_decimal_timedelta_bytes_are_bound_in_the_child_and_sent_back(
    process_sb: ProcessSandbox,
) -> None:
    args = {"amount": "0.10", "wait": "PT1M30S", "data": "AAE="}
    out = await process_sb.call(T + "money", args, Limits())
    assert out.status == "ok", out.content
    assert json.loads(out.content) == {
        "got": "Decimal('0.10') datetime.timedelta(seconds=90) b'\\x00\\x01'",
        "back": ["0.10", "PT1M30S", "AAE="],
    }


async def test_raised(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "boom", {"message": "no such report"}, Limits())
    assert (out.status, out.content, out.error) == ("raised", "ValueError: no such report", "ValueError")
    assert "Traceback" in out.stderr  # for the logs, not for the model


async def test_non_json_result_is_invalid_result(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "not_json", {}, Limits())
    assert out.status == "invalid_result"
    assert "cannot be encoded as JSON" in out.content


# --- resource limits ------------------------------------------------------------------------------


async def test_memory_bomb(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "memory_bomb", {}, Limits(memory_mb=64, timeout=20))
    assert (out.status, out.error) == ("memory", "memory_mb")
    assert "64 MB" in out.content


async def test_cpu_spin_hits_cpu_limit(process_sb: ProcessSandbox) -> None:
    out = await process_sb.call(T + "cpu_spin", {}, Limits(cpu_s=1, timeout=20))
    assert (out.status, out.error) == ("cpu", "cpu_s")
    assert "1 s of CPU" in out.content


async def test_busy_loop_ignoring_signals_is_killed_at_timeout(process_sb: ProcessSandbox) -> None:
    pids: list[int] = []
    out = await process_sb.call(T + "stubborn_spin", {}, Limits(timeout=0.3), on_started=pids.append)
    assert (out.status, out.content) == ("timeout", "Tool timed out after 0.3 s and was killed")
    assert len(pids) == 1 and not _alive(pids[0])


async def test_fork_bomb_dies_with_the_call(process_sb: ProcessSandbox) -> None:
    out = await process_sb.call(T + "fork_bomb", {"n": 40}, Limits(timeout=20))
    assert out.status == "ok"
    pids = sandbox_tools.json_loads(out.content)
    assert len(pids) == 40
    left = [p for p in pids if _alive(p)]
    if left and not ROOT:  # without CAP_SYS_ADMIN there is no PID namespace per call
        pytest.xfail(f"processes that left the group with setsid survive as non-root: {left}")
    assert left == []


async def test_fork_bomb_contained_in_isolated_mode(isolated_sb: ProcessSandbox) -> None:
    out = await isolated_sb.call(T + "fork_bomb", {"n": 40}, Limits(timeout=20))
    assert out.status == "ok"
    inside = set(sandbox_tools.json_loads(out.content))  # pids in the sandbox's namespace
    assert len(inside) == 40
    below = _descendants(_zygote_pid(isolated_sb))
    left = [p for p in below if set(_nspids(p)[1:2]) & inside and runs(p)]
    assert left == []


async def test_gigabyte_result_is_cut_at_the_cap(process_sb: ProcessSandbox) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = await process_sb.call(T + "huge_result", {}, Limits(output_bytes=1000, timeout=30))
    assert (out.status, out.truncated, out.error) == ("output_limit", True, "output_bytes")
    assert out.content.startswith("x" * 1000)
    assert (
        "[output truncated: the result has 1,073,741,824 characters, the limit is 1,000 bytes]" in out.content
    )
    assert len(out.content) < 1200
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert rss_growth_mb < 100  # the host never held the gigabyte


async def test_gigabyte_of_stdout_is_stopped(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "flood_stdout", {}, Limits(output_bytes=5000, file_size_mb=4))
    assert (out.status, out.truncated) == ("output_limit", True)
    assert "file-size limit (4 MB)" in out.content
    assert out.stdout == "y" * 5000  # captured, capped


async def test_segfault_is_crashed(sb: ProcessSandbox) -> None:
    out = await sb.call(T + "segfault", {}, Limits())
    assert (out.status, out.error, out.content) == ("crashed", "SIGSEGV", "Tool process crashed (SIGSEGV)")


# --- environment and isolation --------------------------------------------------------------------


async def test_api_key_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-flux-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    async with ProcessSandbox(env={"GREETING": "hi"}) as sb:
        out = await sb.call(T + "read_env", {"name": "FLUX_API_KEY"}, Limits())
    assert out.status == "ok"
    result = sandbox_tools.json_loads(out.content)
    assert result["value"] is None
    assert set(result["keys"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PWD",
        "PYTHONDONTWRITEBYTECODE",
        "GREETING",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
    }
    with pytest.raises(ConfigurationError):
        ProcessSandbox(env={"FLUX_API_KEY": "x"})


@pytest.mark.parametrize(
    "uids", [range(5000, 5000), range(5000, 5001), range(5000, 5010, 2), range(999, 1010)]
)
def test_a_uid_range_needs_two_uids_from_1000_up(uids: range) -> None:
    """The first uid of the range is the fork server's own while it kills a call's processes (a
    call must never be able to signal it); the calls run as the others."""
    with pytest.raises(ConfigurationError, match="at least 2 uids"):
        ProcessSandbox(uid_range=uids)
    assert ProcessSandbox(uid_range=range(5000, 5002)).max_processes >= 1


async def test_isolated_has_no_network(isolated_sb: ProcessSandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # reachable from the host...
        port = listener.getsockname()[1]
        out = await isolated_sb.call(T + "connect", {"host": "127.0.0.1", "port": port}, Limits(timeout=10))
    assert out.status == "raised"  # ...but not from inside the sandbox
    # PermissionError: Landlock (ABI >= 4) denies the connect() before the empty namespace does.
    assert out.error in {"ConnectionRefusedError", "OSError", "TimeoutError", "PermissionError"}


async def test_isolated_writes_only_in_scratch(isolated_sb: ProcessSandbox) -> None:
    out = await isolated_sb.call(T + "write_file", {"path": "inside.txt"}, Limits())
    assert out.status == "ok" and out.content.startswith("/scratch/")
    outside = os.path.join(os.path.dirname(sandbox_tools.__file__), "sandbox-escape.txt")
    for path in (outside, "/tmp/sandbox-escape.txt", "/sandbox-escape.txt"):
        out = await isolated_sb.call(T + "write_file", {"path": path}, Limits())
        assert out.status == "raised", path
        assert out.error in {"OSError", "PermissionError", "FileNotFoundError"}, out.content
    assert not os.path.exists(outside)


async def test_process_mode_scratch_dir_is_fresh_and_removed(process_sb: ProcessSandbox) -> None:
    first = await process_sb.call(T + "write_file", {"path": "note.txt"}, Limits())
    second = await process_sb.call(T + "list_scratch", {}, Limits())
    assert first.status == second.status == "ok"
    assert second.content == "[]"  # the next call's scratch is empty (a tmpfs or a dir of its own)
    assert not os.path.exists(first.content)


# --- cancellation, concurrency, lifecycle ---------------------------------------------------------


async def test_cancellation_kills_the_child(process_sb: ProcessSandbox) -> None:
    started = anyio.Event()
    pids: list[int] = []

    def on_started(pid: int) -> None:
        pids.append(pid)
        started.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_started() -> None:
                await started.wait()
                scope.cancel()

            tg.start_soon(cancel_when_started)
            await process_sb.call(T + "block_forever", {}, Limits(timeout=60), on_started=on_started)
    assert scope.cancelled_caught
    assert len(pids) == 1 and not _alive(pids[0])
    out = await process_sb.call(T + "trivial", {}, Limits())  # the sandbox still works
    assert out.status == "ok"


async def test_cancellation_in_isolated_mode_leaves_nothing(isolated_sb: ProcessSandbox) -> None:
    started = anyio.Event()
    pids: list[int] = []  # in the sandbox's PID namespace

    def on_started(pid: int) -> None:
        pids.append(pid)
        started.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_started() -> None:
                await started.wait()
                assert any(_nspids(p)[1:2] == pids for p in _descendants(_zygote_pid(isolated_sb)))
                scope.cancel()

            tg.start_soon(cancel_when_started)
            await isolated_sb.call(T + "block_forever", {}, Limits(), on_started=on_started)
    assert scope.cancelled_caught
    assert not any(_nspids(p)[1:2] == pids and runs(p) for p in _descendants(_zygote_pid(isolated_sb)))


async def test_max_processes_queues_calls_and_siblings_keep_results() -> None:
    results: dict[int, SandboxOutcome] = {}
    async with ProcessSandbox(max_processes=1) as sb:

        async def one(i: int, ref: str) -> None:
            results[i] = await sb.call(T + ref, {"message": "x"} if ref == "boom" else {}, Limits(timeout=5))

        async with anyio.create_task_group() as tg:
            for i, ref in enumerate(["trivial", "segfault", "boom", "trivial"]):
                tg.start_soon(one, i, ref)
    assert [results[i].status for i in range(4)] == ["ok", "crashed", "raised", "ok"]


async def test_a_short_call_reports_its_pid_once(sb: ProcessSandbox) -> None:
    # A call that ends before the fork server reports it started sends no "started" frame (one
    # wake-up of the host less): its pid comes with the outcome, and on_started still runs once.
    pids: list[int] = []
    out = await sb.call(T + "trivial", {}, Limits(timeout=10), on_started=pids.append)
    assert out.status == "ok", out
    assert len(pids) == 1 and pids[0] > 0, pids


async def test_a_queued_call_reports_its_start_once_and_runs_after_the_slot_frees() -> None:
    # max_processes=1: the second call waits ("Q"); its on_started comes when it runs, once.
    async with ProcessSandbox(max_processes=1) as sb:
        first_started = anyio.Event()
        second: list[int] = []
        outcomes: dict[str, SandboxOutcome] = {}

        async def first() -> None:
            outcomes["first"] = await sb.call(
                T + "block_forever", {}, Limits(timeout=60), on_started=lambda _: first_started.set()
            )

        async def then_second(scope: anyio.CancelScope) -> None:
            await first_started.wait()
            async with anyio.create_task_group() as inner:

                async def run_second() -> None:
                    outcomes["second"] = await sb.call(
                        T + "trivial", {}, Limits(timeout=0.5), on_started=second.append
                    )

                inner.start_soon(run_second)
                await anyio.wait_all_tasks_blocked()
                assert second == []  # queued behind the first: not started
                scope.cancel()  # frees the slot: the second runs

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as blocker:
                tg.start_soon(then_second, blocker)
                await first()
    assert "first" not in outcomes  # cancelled with its scope
    assert outcomes["second"].status == "ok", outcomes["second"]
    assert len(second) == 1 and second[0] > 0, second


async def _aclose_during_a_call(sb: ProcessSandbox, before_close: Callable[[], object]) -> SandboxOutcome:
    """Close `sb` while a `block_forever` call runs (`before_close()` first); the call's outcome."""
    started = anyio.Event()
    outcome: list[SandboxOutcome] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            outcome.append(
                await sb.call(T + "block_forever", {}, Limits(), on_started=lambda _: started.set())
            )

        tg.start_soon(run)
        await started.wait()
        before_close()
        await sb.aclose()
    return outcome[0]


async def test_aclose_cancels_running_calls_and_is_idempotent() -> None:
    sb = ProcessSandbox()
    outcome = [await _aclose_during_a_call(sb, lambda: None)]
    await sb.aclose()
    assert outcome[0].status == "cancelled"
    out = await sb.call(T + "trivial", {}, Limits())
    assert out.status == "sandbox_unavailable"


async def test_aclose_past_a_fork_server_that_cannot_answer_ends_the_call_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (flaky under load before): `aclose` gave up waiting for a fork server that did not
    exit, closed its stderr memfd, and the call still in flight read that fd to explain the death:
    a raw `OSError` (EBADF) out of `call()`, or another file's tail had the fd number been reused.
    A stopped fork server makes the slow exit certain; the grace is shortened, not skipped."""
    monkeypatch.setattr(_host, "KILL_GRACE", 0.2)
    fds_before = set(os.listdir("/proc/self/fd"))
    sb = ProcessSandbox()
    zygote: list[int] = []

    def stop_the_fork_server() -> None:
        zygote.append(_zygote_pid(sb))
        os.kill(zygote[0], signal.SIGSTOP)

    outcome = await _aclose_during_a_call(sb, stop_the_fork_server)
    assert outcome.status == "cancelled", outcome
    assert not runs(zygote[0])
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # the server's fds went with its last call


async def test_dead_fork_server_is_sandbox_unavailable_then_restarted() -> None:
    async with ProcessSandbox() as sb:
        started = anyio.Event()
        pids: list[int] = []
        outcome: list[SandboxOutcome] = []

        def on_started(pid: int) -> None:
            pids.append(pid)
            started.set()

        async with anyio.create_task_group() as tg:

            async def run() -> None:
                outcome.append(await sb.call(T + "block_forever", {}, Limits(), on_started=on_started))

            tg.start_soon(run)
            await started.wait()
            child = os.pidfd_open(pids[0])
            old = _zygote_pid(sb)
            os.kill(old, 9)
        assert outcome[0].status == "sandbox_unavailable"
        try:
            with anyio.fail_after(10):
                await anyio.wait_readable(child)  # the orphan dies too (PR_SET_PDEATHSIG)
        finally:
            os.close(child)
        out = await sb.call(T + "trivial", {}, Limits())
        assert out.status == "ok" and _zygote_pid(sb) != old


# --- registration-time errors ---------------------------------------------------------------------


def _closure() -> object:
    def inner() -> int:
        return 1

    return inner


@pytest.mark.parametrize(
    "fn",
    [lambda: 1, _closure(), functools.partial(sandbox_tools.echo, "x")],
    ids=["lambda", "closure", "partial"],
)
def test_not_importable_function_is_a_definition_error(fn: object) -> None:
    with pytest.raises(ToolDefinitionError, match="module"):
        ProcessSandbox.tool_ref(fn)  # type: ignore[arg-type]


def test_main_module_function_is_a_definition_error() -> None:
    def tool() -> None: ...

    tool.__module__ = "__main__"
    tool.__qualname__ = "tool"
    with pytest.raises(ToolDefinitionError, match="__main__"):
        ProcessSandbox.tool_ref(tool)


def test_tool_ref_of_a_module_function() -> None:
    assert ProcessSandbox.tool_ref(sandbox_tools.echo) == "sandbox_tools:echo"


async def test_isolated_without_bubblewrap_fails_closed() -> None:
    sb = ProcessSandbox(isolated=True, bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailableError, match="bubblewrap not found"):
        sb.check_available()
    out = await sb.call(T + "trivial", {}, Limits())
    assert (out.status, out.error) == ("sandbox_unavailable", "sandbox_unavailable")
    await sb.aclose()


def test_limits_merge_and_validation() -> None:
    base = Limits(timeout=30, memory_mb=512)
    assert base.merge(Limits(memory_mb=64)) == Limits(timeout=30, memory_mb=64)
    assert base.merge(None) is base
    with pytest.raises(ToolDefinitionError):
        Limits(timeout=-1)
