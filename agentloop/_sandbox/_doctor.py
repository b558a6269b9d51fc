"""`agentloop doctor`: what this machine lets the sandbox enforce, and which cells of README's
threat table therefore hold here. The tests use `probe()` to skip (with the reason) what the
machine cannot do.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields

__all__ = ["Capabilities", "probe", "cells", "main"]

_CAP_SYS_ADMIN = 21
_CLONE_NEWUSER = 0x10000000
_SYS_LANDLOCK_CREATE_RULESET = 444  # x86_64 and aarch64 alike
_LANDLOCK_CREATE_RULESET_VERSION = 1


@dataclass(frozen=True)
class Capabilities:
    root: bool
    cap_sys_admin: bool
    user_namespaces: bool
    cgroup_v2: str  # "delegated", "not delegated (...)" or "absent"
    seccomp: str  # "" when usable, else why not
    landlock_abi: int  # 0: not available
    bwrap_version: str
    bwrap_works: bool
    bwrap_detail: str
    interpreter_readable: bool  # by other uids (else "process" children keep CAP_DAC_READ_SEARCH)


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _userns() -> bool:
    """Try it in a throwaway child: unshare(CLONE_NEWUSER) must not change this process."""
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(_CLONE_NEWUSER) == 0 else 1)
    return os.waitpid(pid, 0)[1] == 0


def _cgroup_v2() -> str:
    mount = None
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                mount = parts[1]
                break
    if mount is None:
        return "absent"
    rel = ""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                rel = line.strip()[3:]
    here = os.path.join(mount, rel.lstrip("/"))
    try:
        with open(os.path.join(here, "cgroup.controllers")) as f:
            controllers = set(f.read().split())
    except OSError:
        controllers = set()
    missing = {"memory", "pids"} - controllers
    if missing:
        return f"not delegated (controllers here: {' '.join(sorted(controllers)) or 'none'}; missing {' '.join(sorted(missing))})"
    if not os.access(here, os.W_OK):
        return f"not delegated ({here} is not writable)"
    return "delegated"


def _seccomp() -> str:
    from ._privs import SeccompUnavailable, compile_seccomp

    try:
        compile_seccomp()
    except SeccompUnavailable as exc:
        return str(exc)
    return ""


def _landlock() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return max(0, int(abi))


def _bwrap() -> tuple[str, bool, str]:
    path = shutil.which("bwrap")
    if path is None:
        return "", False, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return "", False, str(exc)
    from .._exceptions import SandboxUnavailableError
    from ._host import ProcessSandbox

    try:
        ProcessSandbox(isolated=True).check_available()
    except SandboxUnavailableError as exc:
        return version, False, str(exc)
    return version, True, "works"


def probe() -> Capabilities:
    from ._privs import others_can_read
    from ._server import interpreter_dirs

    version, works, detail = _bwrap()
    return Capabilities(
        root=os.geteuid() == 0,
        cap_sys_admin=bool(_cap_eff() >> _CAP_SYS_ADMIN & 1),
        user_namespaces=_userns(),
        cgroup_v2=_cgroup_v2(),
        seccomp=_seccomp(),
        landlock_abi=_landlock(),
        bwrap_version=version,
        bwrap_works=works,
        bwrap_detail=detail,
        interpreter_readable=others_can_read(interpreter_dirs()),
    )


THREATS = (
    "host memory/env",
    "host files",
    "write outside scratch",
    "network",
    "signal the host",
    "outlive the call",
    "memory",
    "pids",
    "disk",
    "sibling call",
)


def _landlock_process(process: dict[str, str], c: Capabilities) -> None:
    """What Landlock changes in the "process" row: reads only of what the tool needs, writes only of
    its scratch, even where the child keeps CAP_DAC_READ_SEARCH."""
    lock = f"Landlock ABI {c.landlock_abi}"
    process["host files"] = (
        f"limited to read-only paths ({lock}): system dirs, interpreter, site-packages, agentloop, "
        "the tool's package, ro_paths"
    )
    process["write outside scratch"] = f"prevented ({lock}: only the call's scratch)"
    if c.root and not c.cap_sys_admin:
        process["sibling call"] = f"prevented (per-call uid, {lock}: only its own scratch)"
    if c.root and c.cap_sys_admin:
        process["disk"] = "limited to scratch_mb (own tmpfs; Landlock: nowhere else)"


def cells(c: Capabilities) -> dict[str, dict[str, str]]:
    """The threat table's "process" and "isolated" rows as they hold on this machine."""
    process = _process_cells(c)
    if c.landlock_abi:
        _landlock_process(process, c)
    iso = _isolated_cells(c)
    if c.landlock_abi:
        iso["host files"] = iso["host files"].replace(
            "limited to read-only binds", "limited to read-only binds + Landlock"
        )
    if c.cgroup_v2 == "delegated":
        note = " (cgroup v2 is delegated here but not used yet)"
        process["memory"] += note
        iso["memory"] = iso.get("memory", "") + note
    return {"process": process, "isolated": iso}


_NPROC = "limited to 512 processes per call (RLIMIT_NPROC on the call's own uid)"


def _process_cells(c: Capabilities) -> dict[str, str]:
    process = _process_root_cells(c) if c.root else _process_user_cells(c)
    process["network"] = "not prevented"
    process["memory"] = (
        "limited to memory_mb per process (RLIMIT_AS), memfds to open_files x file_size_mb"
        + ("" if c.landlock_abi else "; files in /dev/shm and /tmp are not counted")
    )
    process["disk"] = (
        "limited to scratch_mb in the scratch dir (own tmpfs); /tmp and /dev/shm: file_size_mb per file only"
        if c.root and c.cap_sys_admin
        else "limited to file_size_mb per file; the number of files is not"
    )
    return process


def _process_root_cells(c: Capabilities) -> dict[str, str]:
    """A root host: a uid per call (and a PID namespace per call with CAP_SYS_ADMIN)."""
    pidns = c.cap_sys_admin
    seccomp = " (no seccomp here)" if c.seccomp else ""
    unreadable = "; all files: the interpreter is unreadable by other uids, so calls keep CAP_DAC_READ_SEARCH"
    if c.cap_sys_admin:
        sibling = "prevented (per-call uid, own scratch tmpfs)"
    elif c.interpreter_readable:
        sibling = "prevented (per-call uid, 0700 scratch)"
    else:
        sibling = "not prevented (CAP_DAC_READ_SEARCH kept)"
    return {
        "host memory/env": "prevented (per-call uid, non-dumpable host, seccomp)" + seccomp,
        "host files": "not prevented (world-readable files"
        + ("" if c.interpreter_readable else unreadable)
        + ")",
        "write outside scratch": "limited to world-writable dirs (/tmp, /dev/shm)",
        "signal the host": "prevented (per-call uid" + (", own PID namespace)" if pidns else ")"),
        "outlive the call": "prevented ("
        + ("own PID namespace" if pidns else "subreaper + kill by the call's uid")
        + ")",
        "pids": _NPROC,
        "sibling call": sibling,
    }


def _process_user_cells(c: Capabilities) -> dict[str, str]:
    """A host that is not root: the children share its uid."""
    seccomp = " (no seccomp here)" if c.seccomp else ""
    same = "not prevented (same uid)"
    return {
        "host memory/env": "prevented (non-dumpable host, seccomp denies ptrace)" + seccomp,
        "host files": "not prevented (the host's uid)",
        "write outside scratch": "not prevented (the host's uid)",
        "signal the host": same,
        "outlive the call": same,
        "sibling call": same,
        "pids": "limited to 512 more processes of the host's uid",
    }


def _isolated_cells(c: Capabilities) -> dict[str, str]:
    if not c.bwrap_works:
        return {t: f"unavailable: {c.bwrap_detail}" for t in THREATS}
    seccomp = " (no seccomp here)" if c.seccomp else ""
    return {
        "host memory/env": "prevented (own PID and mount namespaces, per-call uid, seccomp)" + seccomp,
        "host files": (
            "limited to read-only binds (system dirs, interpreter, site-packages, the tool's package, ro_paths)"
        ),
        "write outside scratch": "prevented (read-only root, /proc/sys read-only"
        + ("; Landlock: only the call's scratch)" if c.landlock_abi else ")"),
        "network": "prevented (empty network namespace"
        + ("; Landlock denies TCP bind/connect)" if c.landlock_abi >= 4 else ")"),
        "signal the host": "prevented (own PID namespace)",
        "outlive the call": (
            "prevented (PID namespace per call)"
            if c.root and c.cap_sys_admin
            else "prevented (bubblewrap's PID namespace dies with the fork server; per call: process group)"
        ),
        "memory": (
            "limited to memory_mb per process (RLIMIT_AS) + scratch_mb of tmpfs + open_files x file_size_mb of memfds"
        ),
        "pids": _NPROC if c.root else "limited to 512 processes",
        "disk": "limited to scratch_mb (own tmpfs)" if c.root else "limited to 512 MB shared tmpfs",
        "sibling call": (
            "prevented (per-call uid, own /scratch tmpfs)"
            if c.root
            else "not prevented (same uid in the sandbox)"
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentloop doctor", description="what this machine lets the sandbox enforce"
    )
    parser.parse_args(list(argv or []))
    if not sys.platform.startswith("linux"):
        print(f"sandboxed tools need Linux; this is {sys.platform}")
        return 1
    c = probe()
    labels = {
        "root": "running as root",
        "cap_sys_admin": "CAP_SYS_ADMIN",
        "user_namespaces": "user namespaces",
        "cgroup_v2": "cgroup v2",
        "seccomp": "seccomp (libseccomp)",
        "landlock_abi": "Landlock ABI",
        "bwrap_version": "bubblewrap",
        "bwrap_works": "bubblewrap works",
        "bwrap_detail": "bubblewrap detail",
        "interpreter_readable": "interpreter readable by other uids",
    }
    for f in fields(c):
        value = getattr(c, f.name)
        if f.name == "seccomp":
            value = "yes" if not value else f"no: {value}"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        print(f"{labels[f.name]:<36} {value or 'no'}")
    print()
    for mode, row in cells(c).items():
        print(f'"{mode}" on this machine:')
        for threat in THREATS:
            print(f"  {threat:<22} {row.get(threat, '')}")
    print('\n"inline" and "thread" run in the host process: every threat is "not prevented".')
    return 0
