"""Privileges of a sandboxed child: drop root to a per-call uid, drop every capability, and load a
seccomp filter, all before the tool's code runs.

Why each step: a root child could read `/proc/<host>/{environ,mem}`, signal the host, open
`/proc/sys` for writing and ignore RLIMIT_NPROC. As an unprivileged uid of its own (one per call,
so sibling calls cannot touch each other) with an empty bounding set and no_new_privs, it can do
none of that, and RLIMIT_NPROC caps its process count. The seccomp filter removes the syscalls a
tool never needs and an attacker wants (ptrace, process_vm_*, namespaces, mounts, keyrings, bpf).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
from collections.abc import Sequence

__all__ = [
    "SeccompUnavailable",
    "compile_seccomp",
    "load_seccomp",
    "drop_root",
    "set_no_new_privs",
    "set_dumpable",
    "set_subreaper",
    "private_mounts",
    "mount_scratch",
    "remount_scratch",
    "parent_pid",
    "read_proc_self",
    "has_cap",
    "CAP_SYS_ADMIN",
    "DENIED_SYSCALLS",
]

_libc = ctypes.CDLL(None, use_errno=True)
# Resolved here, in the fork server: a child that resolved one itself (dlsym, a new function
# object) paid ~0.1 ms on its call's path, for the uid switch's capset.
_capset, _unshare = _libc.capset, _libc.unshare
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECCOMP = 22
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2

# Denied with EPERM. Everything here is either an escape route out of the sandbox (ptrace,
# process_vm_*, namespaces, mounts, open_by_handle_at), a kernel attack surface a tool has no use
# for (bpf, keyrings, userfaultfd, perf), or a machine-wide setting (clock, swap, modules, reboot).
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
)
# clone() with any of these flags creates a namespace: denied like unshare().
_CLONE_NEWNS = 0x00020000
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x80)
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class SeccompUnavailable(Exception):
    pass


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_seccomp(denied: Sequence[str] = DENIED_SYSCALLS, *, allow_scratch_mount: bool = False) -> bytes:
    """The filter as a classic-BPF program, compiled by libseccomp (once, in the fork server).
    `allow_scratch_mount`: mount() stays allowed, for the call's own scratch tmpfs (mounted while
    still root; the uid switch then takes CAP_SYS_ADMIN away). The child's mount namespace is made
    before the filter is loaded (`private_mounts`), so unshare() is denied whatever the flags."""
    if allow_scratch_mount:
        denied = [d for d in denied if d != "mount"]
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(
            f"libseccomp is not installed ({exc}); Debian: apt-get install libseccomp2"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        eperm = _act_errno(errno.EPERM)
        for syscall in denied:
            nr = lib.seccomp_syscall_resolve_name(syscall.encode())
            if nr >= 0 and lib.seccomp_rule_add_array(ctx, eperm, nr, 0, None) != 0:
                raise SeccompUnavailable(f"seccomp rule for {syscall} rejected")
        nr = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in _CLONE_NS_FLAGS:
            cmp = _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag)
            if lib.seccomp_rule_add_array(ctx, eperm, nr, 1, ctypes.byref(cmp)) != 0:
                raise SeccompUnavailable("seccomp rule for clone flags rejected")
        # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            lib.seccomp_rule_add_array(ctx, _act_errno(errno.ENOSYS), clone3, 0, None)
        fd = os.memfd_create("agentloop-seccomp", os.MFD_CLOEXEC)
        try:
            if lib.seccomp_export_bpf(ctx, fd) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def load_seccomp(program: bytes) -> None:
    """Install a compiled filter on this process (needs no_new_privs or CAP_SYS_ADMIN)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot load the seccomp filter: {os.strerror(err)}")


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def set_no_new_privs() -> None:
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def set_dumpable(on: bool) -> None:
    _prctl(_PR_SET_DUMPABLE, int(on))


def set_subreaper() -> None:
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except OSError:
        return 63


_LAST_CAP = _last_cap()


CAP_DAC_READ_SEARCH = 2
CAP_SYS_ADMIN = 21


def has_cap(cap: int) -> bool:
    """Whether this process has `cap` in its effective set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


_PR_SET_KEEPCAPS = 8


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CapPair = _CapData * 2  # made here: a child that made the array type paid ~50 us on its call's path


def read_proc_self(name: str) -> bytes:
    """/proc/self/<name> (stat, statm: one short line). Plain os calls, no io objects: a spare
    runs this ahead (`parent_pid` in `early_setup`), so its call's path finds it warm (the
    first io.open in a fresh fork costs ~50 us of copy-on-write faults)."""
    fd = os.open(f"/proc/self/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def parent_pid() -> int:
    """Our parent's pid as /proc (the fork server's PID namespace) names it: getppid() says 0 in a
    PID namespace of our own."""
    return int(read_proc_self("stat").rsplit(b")", 1)[1].split()[1])


def _capset_only(cap: int | None) -> None:
    data = _CapPair()
    if cap is not None:
        data[cap // 32].effective = data[cap // 32].permitted = 1 << (cap % 32)
    if _capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def drop_bounding_set(keep: int | None) -> None:
    """Empty the capability bounding set (but `keep`): nothing can ever be regained by an exec.
    The effective set is untouched (the uid switch empties it later), so this runs early."""
    for cap in range(_LAST_CAP + 1):
        if cap == keep:
            continue
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot drop capability {cap} from the bounding set: {os.strerror(err)}")


def early_privileges(cfg: dict[str, object]) -> None:
    """The call-independent steps, done by a spare child before it has a call (off the critical
    path: loading the filter alone costs ~0.5 ms): mount namespace, bounding set, no_new_privs,
    seccomp (which then denies unshare)."""
    if cfg.get("own_scratch"):
        private_mounts()
    if cfg.get("uids"):
        drop_bounding_set(CAP_DAC_READ_SEARCH if cfg.get("keep_read") else None)
    set_no_new_privs()
    program = cfg.get("seccomp_bpf")
    if isinstance(program, bytes) and program:
        load_seccomp(program)


def drop_root(uid: int, keep: int | None = None) -> None:
    """Root -> `uid` for good: no groups, real/effective/saved ids all `uid`, no capabilities left
    in any set (bounding included) except `keep` (only CAP_DAC_READ_SEARCH, for an interpreter
    installed where other uids cannot read, e.g. under /root). Verified."""
    if uid <= 0:
        raise OSError(errno.EINVAL, f"refusing to switch to uid {uid}")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    if keep is not None:
        _prctl(_PR_SET_KEEPCAPS, 1)
    os.setresuid(uid, uid, uid)
    if keep is not None:
        _prctl(_PR_SET_KEEPCAPS, 0)
        _capset_only(keep)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        raise OSError(errno.EPERM, "could not drop privileges")


_MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x20, 0x4000, 1 << 18
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def private_mounts() -> None:
    """A mount namespace of this child's own, private (nothing mounted here propagates back to
    the fork server's view). Call-independent, so a spare child makes it before it has a call:
    copying the mount table is most of the cost of a scratch mount."""
    if _unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    if _libc.mount(b"none", b"/", None, _MS_PRIVATE | _MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot make the call's mounts private: {os.strerror(err)}")


def mount_scratch(target: str, uid: int, size_mb: int | None) -> None:
    """A tmpfs of this call's own at `target`, in the child's own mount namespace: no sibling sees
    it, its size is the call's alone, and it disappears with the call's last process."""
    opts = f"mode=0700,uid={uid},gid={uid}" + (f",size={int(size_mb)}m" if size_mb else "")
    if _libc.mount(b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount the scratch tmpfs: {os.strerror(err)}")


def remount_scratch(target: str, size_mb: int | None) -> None:
    """The scratch tmpfs a spare mounted ahead, resized for its call (nothing was written to it
    yet): an offered spare is not bound to a scratch size, so calls of mixed sizes do not
    discard offers. No size is tmpfs's default, half of RAM, as `mount_scratch` leaves it."""
    opts = f"size={int(size_mb)}m" if size_mb else "size=50%"
    flags = _MS_REMOUNT | _MS_NOSUID | _MS_NODEV
    if _libc.mount(None, target.encode(), None, flags, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot resize the scratch tmpfs: {os.strerror(err)}")


def others_can_read(paths: Sequence[str]) -> bool:
    """Whether a process of another uid can read these directories (every parent searchable)."""
    for p in paths:
        d = os.path.realpath(p)
        while True:
            try:
                mode = os.stat(d).st_mode
            except OSError:
                return False
            if not mode & 0o001:
                return False
            if d == "/":
                break
            d = os.path.dirname(d)
    return True


def confine_privileges(
    call: dict[str, object], scratch: str, cfg: dict[str, object], *, mounted: bool = False
) -> None:
    """Everything privilege-related, in the only safe order: mounts need root, then root goes
    (`early_privileges` already loaded the filter: it lets a process with CAP_SYS_ADMIN mount,
    which nothing can do once root is gone). `mounted`: a spare child mounted the call's scratch
    tmpfs before it had the call (`mount_scratch`, with the uid and size the fork server gave
    it). Without "own_scratch" the fork server made the call's scratch dir its uid's already."""
    uid = int(call.get("uid") or 0)  # type: ignore[call-overload]
    if cfg.get("own_scratch") and not mounted:
        limits = call["limits"]
        mount_scratch(scratch, uid, limits.get("scratch_mb") if isinstance(limits, dict) else None)
    if uid:
        drop_root(uid, CAP_DAC_READ_SEARCH if cfg.get("keep_read") else None)
        # A credential change clears PR_SET_PDEATHSIG: arm it again, then make sure the fork
        # server did not die in between (we would have missed its death signal).
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        zygote = cfg.get("zygote_pid")
        if zygote and parent_pid() != zygote:
            raise OSError(errno.ESRCH, "the fork server died while the call started")
    os.chdir(scratch)  # again: a tmpfs mounted over the cwd is only seen through a fresh chdir
