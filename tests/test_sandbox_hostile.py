"""Every "prevented" cell of README's threat table, as a hostile tool run through `Agent.run`.

The tools are in tests/hostile_tools.py. Scenarios that signal every process they may (kill(-1))
run in tests/hostile_scenarios.py inside `unshare --pid --fork --mount-proc`, so that even a
sandbox failure could not reach a process outside that namespace; the root-without-CAP_SYS_ADMIN
variants add `setpriv --bounding-set=-sys_admin`. Tests needing what this machine lacks skip with
the reason (`agentloop doctor` says the same).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import uuid

import hostile_tools as ht
import pytest

from agentloop import Agent, Limits, ToolRegistry
from agentloop._sandbox._doctor import probe  # internal unit under test
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

HERE = os.path.dirname(os.path.abspath(__file__))
CAPS = probe()
needs_root = pytest.mark.skipif(not CAPS.root, reason="per-call uids need the host to run as root")
needs_landlock = pytest.mark.skipif(not CAPS.landlock_abi, reason="the kernel has no Landlock (ABI 0)")
MODES = [
    "process",
    pytest.param(
        "isolated",
        marks=pytest.mark.skipif(not CAPS.bwrap_works, reason=f"isolated unavailable: {CAPS.bwrap_detail}"),
    ),
]


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.exists(p)]


def exc_type(content: str) -> str:
    """The exception type in the model-facing text "Tool 'x' raised T: message" (every mode names the tool)."""
    m = re.match(r"Tool '[^']*' raised (\w+)", content)
    return m.group(1) if m else content.split(":")[0]


def _registry(mode: str, **limits: object) -> ToolRegistry:
    registry = ToolRegistry(sandbox=mode, limits=Limits(timeout=30, **limits))  # type: ignore[arg-type]
    for name in dir(ht):
        fn = getattr(ht, name)
        if callable(fn) and getattr(fn, "__module__", None) == "hostile_tools" and not name.startswith("_"):
            registry.register(fn)
    return registry


async def _run(mode: str, *calls: dict, **limits: object):  # type: ignore[no-untyped-def]
    async with _registry(mode, **limits) as registry:
        result = await Agent(client=ScriptedModel([tool_calls(*calls), text("done")]), tools=registry).run(
            "go"
        )
    assert result.output == "done"  # the host survived and the run finished
    return result.tool_calls


@needs_root
@pytest.mark.parametrize("mode", MODES)
async def test_host_memory_and_environment_are_out_of_reach(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-host-secret-1234")
    host = os.getpid()
    records = await _run(
        mode,
        call("read_file", {"path": f"/proc/{host}/environ"}),
        call("overwrite_memory", {"pid": host}),
        call("read_file", {"path": "/proc/1/environ"}),
        call("overwrite_memory", {"pid": 1}),
    )
    for r in records:
        assert r.status == "raised", (r.name, r.content)
        assert exc_type(r.content) in {"PermissionError", "FileNotFoundError"}, r.content
        assert "sk-host-secret" not in r.content


@needs_root
@pytest.mark.parametrize("mode", MODES)
async def test_no_write_outside_scratch_nor_proc_sys(mode: str) -> None:
    records = await _run(
        mode,
        call("open_for_writing", {"path": "/proc/sys/kernel/hostname"}),  # opened only, never written
        call("open_for_writing", {"path": "/proc/sys/vm/drop_caches"}),
        call("fill_dir", {"path": "/agentloop-escape", "mb": 1}),
        call("fill_dir", {"path": os.path.join(HERE, "agentloop-escape"), "mb": 1}),
        call("fill_dir", {"path": "inside.bin", "mb": 1}),
    )
    sys_a, sys_b, root, beside, inside = records
    for r in (sys_a, sys_b):
        assert r.status == "raised" and exc_type(r.content) in {"PermissionError", "OSError"}, r.content
    assert root.content == beside.content == "0"  # not one MB written outside
    assert not os.path.exists("/agentloop-escape") and not os.path.exists(
        os.path.join(HERE, "agentloop-escape")
    )
    assert inside.content == "1"


@needs_root
@pytest.mark.parametrize("mode", MODES)
async def test_a_sibling_call_cannot_see_the_scratch(mode: str) -> None:
    """Two calls at once: one writes a secret in its scratch and waits on an abstract socket until
    the other has looked for it (no sleeping: the sibling connects when it is done)."""
    token = uuid.uuid4().hex
    records = await _run(
        mode,
        call("write_and_wait", {"name": "secret.txt", "token": token}),
        call("peek_siblings", {"name": "secret.txt", "token": token}),
    )
    writer, peeker = records
    assert writer.status == "ok" and writer.content == "seen", writer.content
    assert peeker.status == "ok", peeker.content
    seen = json.loads(peeker.content)
    assert "sibling-secret" not in peeker.content
    if mode == "process":
        # The sibling's dir is closed to us or an empty mount point; a call started in a spare
        # child (its mount namespace made ahead of the call) does not even see it.
        assert all(r == [] for r in seen["read"]), seen
        assert set(seen["errors"]) <= {"PermissionError", "FileNotFoundError"}
    else:  # our /scratch is a tmpfs of our own: the sibling's is not even there
        assert seen["found"] == [] and seen["cwd"] == "/scratch"


@pytest.mark.skipif(not CAPS.bwrap_works, reason=f"isolated unavailable: {CAPS.bwrap_detail}")
async def test_isolated_has_no_network_and_no_dns() -> None:
    async with FakeFluxRouter() as listening:  # a port the host really listens on
        port = int(listening.url.rsplit(":", 1)[1])
        isolated = await _run(
            "isolated", call("connect_tcp", {"port": port}), call("resolve", {"name": "example.com"})
        )
        control = await _run("process", call("connect_tcp", {"port": port}))
    tcp, dns = isolated
    # Landlock (ABI >= 4) refuses the connect() first (PermissionError); else the empty namespace.
    assert tcp.status == "raised" and any(
        w in tcp.content for w in ("Connection", "Network", "PermissionError")
    )
    assert dns.status == "raised" and exc_type(dns.content) == "gaierror", dns.content
    assert control[0].status == "ok"  # "process" does reach it: the table says "not prevented"


@pytest.mark.skipif(not CAPS.bwrap_works, reason=f"isolated unavailable: {CAPS.bwrap_detail}")
async def test_isolated_does_not_bind_the_cwd_nor_sys_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("FLUX_API_KEY=sk-dotenv-secret\n")
    sock_path = str(tmp_path / "app.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(sock_path)
        listener.listen()
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        repo = os.path.dirname(HERE)
        records = await _run(
            "isolated",
            call("read_file", {"path": str(tmp_path / ".env")}),
            call("connect_unix", {"path": sock_path}),
            call("read_file", {"path": os.path.join(repo, "pyproject.toml")}),  # repo root: not bound
            call("read_file", {"path": ht.__file__}),  # the tool's own module: bound
        )
    env, unix, repo_file, own = records
    for r in (env, unix, repo_file):
        assert r.status == "raised" and exc_type(r.content) == "FileNotFoundError", r.content
    assert own.status == "ok" and "Hostile tools" in own.content


@pytest.mark.skipif(not CAPS.bwrap_works, reason=f"isolated unavailable: {CAPS.bwrap_detail}")
async def test_isolated_scratch_is_capped_per_call() -> None:
    records = await _run(
        "isolated",
        call("fill_dir", {"path": "a.bin", "mb": 64}),
        call("fill_dir", {"path": "b.bin", "mb": 64}),
        scratch_mb=16,
        file_size_mb=128,
    )
    for r in records:  # each call has its own 16 MB, not a share of one
        assert r.status == "ok" and 14 <= int(r.content) <= 16, r.content


@pytest.mark.parametrize("mode", ["process", "isolated"])
async def test_memfds_are_bounded_by_file_size_and_open_files(mode: str) -> None:
    if mode == "isolated" and not CAPS.bwrap_works:
        pytest.skip(f"isolated unavailable: {CAPS.bwrap_detail}")
    records = await _run(mode, call("fill_memfds", {"count": 100, "mb": 8}), open_files=16, file_size_mb=2)
    assert records[0].status == "ok" and int(records[0].content) <= 16 * 2, records[0].content


@pytest.mark.parametrize("mode", MODES)
async def test_the_done_channel_gives_a_tool_nothing(mode: str) -> None:
    """A child tells the fork server "done" over a socket the tool can reach. Forging it early
    only ends the tool's own call (killed, no result); closing it only means the outcome waits
    for the child's exit."""
    forged, closed, after = await _run(
        mode, call("forge_done", {}), call("close_done_and_return", {}), call("trivial", {})
    )
    assert forged.status == "crashed" and "done without writing a result" in forged.content, forged.content
    assert (closed.status, closed.content) == ("ok", "closed")
    assert after.status == "ok"


# --- in a PID namespace of their own: kill(-1), daemons, fork bombs, fd exhaustion -------------------


def _wrapped(scenario: str, mode: str, *args: str, no_sys_admin: bool = False, timeout: float = 300) -> dict:  # type: ignore[type-arg]
    if not CAPS.root or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux unshare (to run the scenario in its own PID namespace)")
    argv = ["unshare", "--pid", "--fork", "--mount-proc"]
    if no_sys_admin:
        if shutil.which("setpriv") is None:
            pytest.skip("needs util-linux setpriv")
        argv += ["setpriv", "--bounding-set=-sys_admin"]
    argv += [sys.executable, os.path.join(HERE, "hostile_scenarios.py"), scenario, mode, *args]
    proc = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "unavailable" in out:
        pytest.skip(f"{mode} unavailable here: {out['unavailable']}")
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mode", "no_sys_admin"),
    [("process", False), ("isolated", False), ("process", True)],
    ids=["process-root", "isolated-root", "process-root-without-CAP_SYS_ADMIN"],
)
def test_kill_the_host_daemons_and_fork_bombs(mode: str, no_sys_admin: bool) -> None:
    """(isolated as root without CAP_SYS_ADMIN fails closed: the test after this one.)"""
    out = _wrapped("kills", mode, no_sys_admin=no_sys_admin)
    assert out["output"] == "survived"  # the host lived through kill(host), kill(-1), ...
    assert out["zygote_alive_after"]  # ...and so did the fork server
    records = out["records"]
    who = json.loads(records[0][2])
    assert int(who["uid"]) >= 1000 and who["no_new_privs"] == "1" and who["seccomp"] == "2"
    assert (
        int(who["cap_eff"], 16) & ~(1 << 2) == 0 and int(who["cap_bnd"], 16) & ~(1 << 2) == 0
    )  # at most DAC_READ_SEARCH
    for _name, status, content in records[1:4]:  # the host, the fork server, pid 1
        assert status in ("raised", "ok"), content
        if status == "raised":
            assert exc_type(content) in {"PermissionError", "ProcessLookupError"}, content
    bomb = next(r for r in records if r[0] == "fork_bomb")
    assert bomb[1] == "ok" and int(bomb[2]) <= 512  # RLIMIT_NPROC binds the call's own uid
    assert [r[1] for r in records if r[0] == "daemon"] == ["ok"]
    assert not out["daemon_alive"]  # the double-forked setsid daemon died with its call
    assert out["left"] == [], out["left_detail"]  # nothing of any call runs once its outcome is in


@pytest.mark.parametrize(
    ("mode", "no_sys_admin"),
    [("process", False), ("isolated", False), ("process", True)],
    ids=["process-root", "isolated-root", "process-root-without-CAP_SYS_ADMIN"],
)
def test_a_call_cannot_kill_the_fork_server_while_it_is_killed(mode: str, no_sys_admin: bool) -> None:
    """Regression: the fork server kills a call's processes with kill(-1) as the call's uid. It
    took that uid as its real uid too, and the kernel lets a process signal any process whose
    real uid is its own: processes left by a call, SIGKILLing the fork server in a loop, killed
    it in that moment (57 of 200 calls, root without CAP_SYS_ADMIN, where no PID namespace hides
    it), and whatever the fork server had not killed yet survived the call."""
    out = _wrapped("stalkers", mode, no_sys_admin=no_sys_admin)
    assert out["output"] == "after"
    assert out["statuses"] == ["ok"] * 40, out["contents"]
    assert len(out["targets"]) == 1  # every call was served by the one fork server it started with
    assert out["zygote_alive"]
    assert out["left"] == [], out["left_detail"]  # the stalkers died with their calls


def test_hosts_in_two_pid_namespaces_get_different_call_uids() -> None:
    """Regression: the default uids came from the host's pid, which is 1 in every container's PID
    namespace: two containers' sandboxes shared their calls' uids, and so the RLIMIT_NPROC budget
    of those uids (one's fork bomb made the other's forks fail with EAGAIN)."""
    if not CAPS.root or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux unshare")
    # Both namespaces stay alive until both have answered: a PID namespace's inode number is
    # reused once it is freed, so two containers one after the other may share it (and need not
    # differ: their calls never overlap); two live at once must not.
    show = (
        "from agentloop._sandbox import ProcessSandbox as P; import os, sys; r = P()._spec.uids; "
        "print(os.getpid(), r.start, r.stop, flush=True); sys.stdin.read()"
    )
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", show]
    hosts = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    try:
        seen = [host.stdout.readline().split() for host in hosts if host.stdout is not None]
    finally:
        for host in hosts:
            host.communicate(input="", timeout=60)
    assert [host.returncode for host in hosts] == [0, 0], seen
    assert seen[0][0] == seen[1][0] == "1"  # the same pid...
    first, second = (range(int(a), int(b)) for _, a, b in seen)
    assert len(first) == len(second) == 64
    assert not set(first) & set(second)  # ...and no uid in common


def test_isolated_as_root_without_cap_sys_admin_fails_closed() -> None:
    """README: "isolated" fails closed where bubblewrap cannot create its namespaces. Registration
    refuses with what is missing and what to do; the executor, asked anyway, runs nothing."""
    if not CAPS.bwrap_version:
        pytest.skip("bubblewrap is not installed")
    out = _wrapped("fails_closed", "isolated", no_sys_admin=True)
    refused = str(out.get("refused", ""))
    assert "CAP_SYS_ADMIN" in refused and "sandbox='process'" in refused, out
    assert "Nothing runs unsandboxed" in refused
    assert (out["status"], out["ran"]) == ("sandbox_unavailable", False), out
    assert "CAP_SYS_ADMIN" in str(out["content"])
    control = _wrapped("fails_closed", "process", no_sys_admin=True)  # the advice holds: it runs there
    assert control.get("registered") and (control["status"], control["content"]) == ("ok", "1"), control


def test_parallel_calls_past_the_fd_budget_all_get_an_outcome() -> None:
    """100 calls at once under `ulimit -n 256`: the host admits 48 at a time ((256 - 64) // 4), the
    rest queue. The long run, 500 calls at 1024 (what this test ran before: 10 s of CPU, the
    suite's costliest sandbox test), is benchmarks/sandbox_many_calls.py."""
    out = _wrapped("many_calls", "process", "100", "256")
    assert out["n"] == 100 and out["output"] == "after"  # no exception out of the run
    assert set(out["statuses"]) <= {"ok", "sandbox_unavailable"}
    assert out["statuses"].get("ok", 0) == 100, out  # beyond the fd budget, calls queue


def test_doctor_reports_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    from agentloop._sandbox._doctor import cells  # internal unit under test
    from agentloop.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert ("running as root                      yes" in out) == CAPS.root
    for mode, row in cells(CAPS).items():
        assert f'"{mode}" on this machine:' in out
        for threat, cell in row.items():
            assert f"{threat:<22} {cell}" in out
    if CAPS.landlock_abi:  # what the Landlock tests below prove here
        assert cells(CAPS)["process"]["host files"].startswith("limited to read-only paths (Landlock")
        assert cells(CAPS)["process"]["write outside scratch"].startswith("prevented (Landlock")
    without = cells(dataclasses.replace(CAPS, landlock_abi=0))["process"]  # an older kernel: said so
    assert "Landlock" not in without["write outside scratch"] + without["host files"]
    if CAPS.root:
        assert without["write outside scratch"].startswith("limited to world-writable dirs")
    if CAPS.root and CAPS.cap_sys_admin:  # what the tests above proved here
        assert cells(CAPS)["process"]["signal the host"].startswith("prevented")
        assert cells(CAPS)["process"]["outlive the call"].startswith("prevented")


@needs_root
@pytest.mark.skipif(bool(CAPS.seccomp), reason=f"no seccomp here: {CAPS.seccomp}")
@pytest.mark.parametrize("mode", MODES)
async def test_seccomp_denies_namespaces_and_ptrace(mode: str) -> None:
    (record,) = await _run(mode, call("escape_syscalls", {}))
    assert record.status == "ok", record.content
    assert json.loads(record.content) == {"unshare": 1, "ptrace": 1}  # EPERM, from the filter


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("process", marks=needs_landlock),
        pytest.param(
            "isolated",
            marks=pytest.mark.skipif(
                not CAPS.bwrap_works, reason=f"isolated unavailable: {CAPS.bwrap_detail}"
            ),
        ),
    ],
)
async def test_ro_paths_are_bound_read_only(mode: str, tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "table.csv").write_text("a,b\n")
    registry = ToolRegistry(sandbox=mode, sandbox_ro_paths=[str(data)])
    registry.register(ht.read_file)
    registry.register(ht.fill_dir)
    script = [
        tool_calls(
            call("read_file", {"path": str(data / "table.csv")}),
            call("fill_dir", {"path": str(data / "x"), "mb": 1}),
        ),
        text("done"),
    ]
    async with registry:
        result = await Agent(client=ScriptedModel(script), tools=registry).run("go")
    read, write = result.tool_calls
    assert (read.status, read.content) == ("ok", "a,b\n")
    assert write.content == "0" and not (data / "x").exists()


# --- Landlock: what a "process" (or "isolated") child may read and write -------------------------


@needs_landlock
@pytest.mark.parametrize("mode", MODES)
async def test_landlock_confines_reads_and_writes(
    mode: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root-owned 0600 file (an /etc/shadow stand-in), a `.env` in the host's cwd, world-writable
    /tmp and /dev/shm: out of reach, even where the child keeps CAP_DAC_READ_SEARCH; its own module,
    the stdlib and its scratch still work."""
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$secret-hash:19000::::::\n")
    shadow.chmod(0o600)
    (tmp_path / ".env").write_text("FLUX_API_KEY=sk-dotenv-secret\n")
    monkeypatch.chdir(tmp_path)
    tag = uuid.uuid4().hex
    outside = [f"/tmp/agentloop-escape-{tag}", f"/dev/shm/agentloop-escape-{tag}"]
    records = await _run(
        mode,
        call("read_file", {"path": str(shadow)}),
        call("read_file", {"path": str(tmp_path / ".env")}),
        *(call("fill_dir", {"path": p, "mb": 1}) for p in outside),
        call("read_file", {"path": ht.__file__}),
        call("import_module", {"name": "xml.dom.minidom"}),
        call("write_and_read_scratch", {}),
        call("read_through_symlink", {"target": str(shadow)}),
        call("exec_cat", {"path": str(shadow)}),
    )
    shadow_r, env_r, tmp_w, shm_w, own, stdlib, scratch, link, cat = records
    assert cat.status == "ok" and cat.content.startswith("1:") and "secret" not in cat.content
    for r in (shadow_r, env_r, link):
        assert r.status == "raised", r.content
        # Landlock says EACCES; "isolated" does not even bind these paths.
        assert exc_type(r.content) in {"PermissionError", "FileNotFoundError"}, r.content
        assert "secret" not in r.content.replace(str(tmp_path), "")
    assert (tmp_w.content, shm_w.content) == ("0", "0") and _existing(outside) == []
    assert own.status == "ok" and "Hostile tools" in own.content
    assert (stdlib.status, stdlib.content) == ("ok", "xml.dom.minidom")
    assert (scratch.status, scratch.content) == ("ok", "mine:note.txt")


@needs_landlock
async def test_an_import_from_outside_the_ruleset_names_the_path_and_ro_paths(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module the host imports from an arbitrary sys.path entry is not readable by the tool; the
    tool error says which path and what to do (sandbox_ro_paths)."""
    (tmp_path / "helper_beside_the_script.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (record,) = await _run("process", call("import_module", {"name": "helper_beside_the_script"}))
    assert record.status == "raised", record.content
    assert exc_type(record.content) in {"ModuleNotFoundError", "PermissionError"}, record.content
    assert str(tmp_path / "helper_beside_the_script") in record.content
    assert "sandbox_ro_paths" in record.content


@needs_landlock
async def test_an_import_from_ro_paths_works(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "helper_in_ro_paths.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry(sandbox="process", sandbox_ro_paths=[str(tmp_path)])
    registry.register(ht.import_module)
    script = [tool_calls(call("import_module", {"name": "helper_in_ro_paths"})), text("done")]
    async with registry:
        result = await Agent(client=ScriptedModel(script), tools=registry).run("go")
    (record,) = result.tool_calls
    assert (record.status, record.content) == ("ok", "helper_in_ro_paths")


def test_without_landlock_calls_still_run_and_doctor_says_so() -> None:
    """Landlock hidden by a seccomp filter (EPERM): best effort, the call runs without it."""
    out = _wrapped("no_landlock", "process")
    assert out["abi"] == 0
    assert (out["status"], out["content"], out["output"]) == ("ok", "anyone may read this", "done")
    assert "Landlock" not in out["cells"]["host files"] + out["cells"]["write outside scratch"]


@needs_landlock
async def test_multiprocessing_semaphores_are_refused_as_the_readme_says() -> None:
    """README: a "process" tool cannot create multiprocessing semaphores (they live in /dev/shm)."""
    (record,) = await _run("process", call("mp_lock", {}))
    assert record.status == "raised" and exc_type(record.content) == "PermissionError", record.content
