"""Landlock (Linux >= 5.13): the child may read only what Python and the tool need, write only its
scratch, and (ABI >= 4, "isolated") make no TCP connection, whatever its uid or capabilities.

Why: a "process" child whose interpreter sits where other uids cannot read (pyenv under /root)
keeps CAP_DAC_READ_SEARCH, and could then read every file on the host; an unprivileged child can
still read what any uid may read and write world-writable dirs. A Landlock domain is checked on
top of permissions and capabilities, so neither matters any more.

Best effort by ABI: the rights of the highest ABI the kernel knows are handled (denied unless a
rule allows them). Without Landlock (ABI 0, or the syscall filtered) the child runs without it;
`agentloop doctor` says which table cells then do not hold.

Cost: the ruleset (one O_PATH open + one syscall per path) is built by the pre-forked spare child
before it has a call; a call adds its scratch and its tool's own package, then restricts itself.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import sys
from collections.abc import Iterable, Sequence

from ._bwrap import _ETC_FILES, _SYSTEM_DIRS

__all__ = ["abi", "Ruleset", "read_paths", "tool_paths", "denial_hint", "relative_hint", "LandlockError"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# x86_64 and aarch64 (and every architecture added since 5.13) share these numbers.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem access rights, and the ABI that introduced each.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1_FS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_TCP = (1 << 0) | (1 << 1)  # BIND_TCP | CONNECT_TCP (ABI 4)
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the ones a non-directory takes

READ = EXECUTE | READ_FILE | READ_DIR
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# "process" keeps the network (the table says so): name resolution needs these.
_ETC_NET = (
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
)


class LandlockError(OSError):
    pass


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or a filter hides the syscall)."""
    return max(0, int(_libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)))


def _fs_rights(version: int) -> int:
    rights = _ABI1_FS
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def read_paths(roots: Iterable[str], *, network: bool) -> list[str]:
    """Everything a child reads and executes: system dirs, the /etc files Python and libc open,
    /proc (read only: /proc/<host> stays closed by uid and non-dumpability), and `roots` (the
    interpreter, site-packages in use, agentloop, the tools' packages, `ro_paths`)."""
    return [*_SYSTEM_DIRS, *_ETC_FILES, *(_ETC_NET if network else ()), "/proc", *roots]


class Ruleset:
    """A Landlock ruleset being built (one fd); `restrict` applies it to this process for good."""

    def __init__(self, version: int, *, deny_tcp: bool) -> None:
        self.version = version
        self.fs = _fs_rights(version)
        net = _NET_TCP if deny_tcp and version >= 4 else 0
        attr = _RulesetAttr(self.fs, net, 0)
        fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
        # Above the fds a child dup2()s its memfds onto (0-3), so that none of them replaces it.
        self.fd = fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(int(fd))
        self.allowed: list[str] = []

    def allow(self, paths: Iterable[str], access: int) -> None:
        """Allow `access` beneath each path that exists (missing ones are skipped: /lib32, ...)."""
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rights = access & self.fs
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    rights &= _FILE_RIGHTS
                rule = _PathBeneath(rights, fd)
                if _libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    err = ctypes.get_errno()
                    raise LandlockError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
                self.allowed.append(path)
            finally:
                os.close(fd)

    def allow_defaults(self, roots: Sequence[str], *, network: bool) -> None:
        self.allow(read_paths(roots, network=network), READ)
        self.allow(_DEVICES, READ_FILE | WRITE_FILE | TRUNCATE)

    def restrict(self) -> None:
        """Enter the domain (needs no_new_privs, set earlier); the ruleset fd is closed."""
        try:
            if _libc.syscall(_SYS_RESTRICT_SELF, self.fd, 0) != 0:
                err = ctypes.get_errno()
                raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
        finally:
            os.close(self.fd)


def tool_paths(module_name: str) -> list[str]:
    """The tool's own top-level package directory (or module file), as the fork server imported it."""
    mod = sys.modules.get(module_name.split(".")[0])
    paths = [str(p) for p in getattr(mod, "__path__", None) or []]
    file = getattr(mod, "__file__", None)
    if not paths and isinstance(file, str):
        paths = [file]
    return [os.path.realpath(p) for p in paths]


def denial_hint(exc: BaseException, allowed: Sequence[str]) -> str | None:
    """What to do when the tool failed on a path outside the `allowed` ones: an import from a
    directory that is not the tool's own package, or a data file elsewhere. None otherwise (a
    permission the file system itself refuses, inside an allowed path, gets no hint)."""
    path = None
    if isinstance(exc, PermissionError) and exc.errno == errno.EACCES and exc.filename:
        path = str(exc.filename)
    elif isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        for entry in sys.path:  # stat() is not restricted: the file is there, only unreadable
            for candidate in (os.path.join(entry, top), os.path.join(entry, top + ".py")):
                if os.path.exists(candidate):
                    path = candidate
                    break
            if path:
                break
    if path is None or path.startswith(("/proc/", "/sys/", "/dev/")):
        return None
    full = os.path.abspath(path)
    if any(full == a or full.startswith(a.rstrip("/") + "/") for a in allowed):
        return None
    return (
        f"{path} is outside what sandboxed tools may read (the interpreter, the site-packages in use, "
        "agentloop, the tool's own package); if the tool needs it, add it to "
        "ToolRegistry(sandbox_ro_paths=[...])"
    )


def relative_hint(exc: BaseException) -> str | None:
    """A relative path the tool did not find: the call runs in its own scratch directory, not in
    the host's current directory, which the user expects ('config.json' beside their script)."""
    name = getattr(exc, "filename", None) if isinstance(exc, FileNotFoundError) else None
    if not isinstance(name, (str, bytes)) or os.path.isabs(name):
        return None
    return (
        "a sandboxed call runs in a scratch directory of its own, not the host's current directory: "
        "give the tool an absolute path, readable through ToolRegistry(sandbox_ro_paths=[...])"
    )
