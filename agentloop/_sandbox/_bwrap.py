"""The bubblewrap command line of the "isolated" mode, and its one-time probe.

Inside: no network (own, empty net namespace), own PID / IPC / UTS namespaces, a read-only view
of only what Python needs (system dirs, a few /etc files, the interpreter prefix, the host's
sys.path), /proc/sys read-only, a size-capped tmpfs at /scratch for the per-call scratch dirs, and
everything else read-only. The zygote runs as PID 1 and children fork inside.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Sequence

from .._exceptions import SandboxUnavailableError
from ._protocol import SCRATCH_IN_SANDBOX

__all__ = ["bwrap_argv", "probe_bwrap", "SCRATCH_TMPFS_BYTES"]

SCRATCH_TMPFS_BYTES = 512 << 20  # the shared scratch tmpfs, used only where a call cannot mount its own
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
    "/etc/ssl",
    "/etc/ca-certificates",
)


def _site_dirs(path: Sequence[str]) -> list[str]:
    """The site-packages in use: the interpreter's, and every sys.path entry named like one.
    Not the current directory nor arbitrary sys.path entries (a .env or a socket may sit there)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        dirs.append(site.getusersitepackages())
    dirs += [p for p in path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")]
    return dirs


def _python_roots(path: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The paths to bind read-only: interpreter prefixes, the site-packages in use, agentloop
    itself, and `extra` (the tools' own modules or packages, and the user's `ro_paths`)."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.abspath(sys.executable)),
    ]
    candidates.append(os.path.dirname(os.path.realpath(sys.executable)))
    candidates += _site_dirs(path)
    candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the agentloop package
    candidates += list(extra)
    roots: list[str] = []
    for c in candidates:
        for p in {os.path.abspath(c), os.path.realpath(c)}:
            if os.path.exists(p) and not p.startswith(("/proc", "/dev", "/sys")) and p != "/":
                roots.append(p)
    roots = sorted(set(roots), key=len)
    kept: list[str] = []
    for r in roots:  # a parent already bound covers its children
        if not any(r == k or r.startswith(k.rstrip("/") + "/") for k in [*kept, *_SYSTEM_DIRS]):
            kept.append(r)
    return kept


def bwrap_argv(bwrap: str, path: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--new-session", "--as-pid-1"]
    if os.geteuid() == 0:
        # No user namespace: it would map root to root anyway, and without one the zygote keeps
        # CAP_SETUID (children become nobody) and CAP_SYS_ADMIN (a PID namespace per call).
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--disable-userns"]
    made: set[str] = {"/"}

    def parents(p: str) -> None:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in made:
                made.add(d)
                argv.extend(["--perms", "0755", "--dir", d])  # bwrap would create it 0700

    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
            made.add(d)
    for f in _ETC_FILES:
        if os.path.exists(f):
            parents(f)
            argv += ["--ro-bind", f, f]
    for r in _python_roots(path, extra):
        parents(r)
        argv += ["--ro-bind", r, r]
        made.add(r)
    argv += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
    argv += ["--size", str(SCRATCH_TMPFS_BYTES), "--perms", "0755", "--tmpfs", SCRATCH_IN_SANDBOX]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH_IN_SANDBOX, "--"]
    return argv


def probe_bwrap(bwrap: str, path: Sequence[str], env: dict[str, str]) -> None:
    """Run the real command line once with a trivial program; raise if it does not work."""
    argv = [*bwrap_argv(bwrap, path), os.path.abspath(sys.executable), "-I", "-c", "import sys; sys.exit(0)"]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailableError(f"bubblewrap ({bwrap}) cannot be run: {exc}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise SandboxUnavailableError(
            f"bubblewrap ({bwrap}) does not work on this host (exit {proc.returncode}): {detail}; "
            "the 'isolated' mode needs working user or mount namespaces"
        )
