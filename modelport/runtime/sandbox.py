"""What a worker gives up before it runs module code: new privileges, core dumps, and every path it was not
handed.

`confine` runs in the worker process, after the interpreter started and before the module is imported:

- `PR_SET_NO_NEW_PRIVS`: nothing the module executes gains privileges (setuid binaries, file capabilities);
- no core dumps, which would write the process's memory (inputs, weights) to disk;
- no capabilities: a worker of a server that runs as root keeps uid 0 but loses every capability, for good
  (the bounding set is emptied, so executing a program cannot bring them back);
- a Landlock domain (Linux 5.13 and later): the filesystem is read-only where programs and libraries live
  (`/usr`, `/etc`, the interpreter, the module's environment, the module), writable only in the worker's own
  directory and output directory, and absent elsewhere: the server's data directory (its database, objects,
  logs and other modules' files), home directories, the server's working directory, and the files in `/etc`
  that only their owner may read (`/etc/shadow`). The same domain keeps the worker from tracing or signalling
  processes outside it, the server among them, and from reading their `/proc/<pid>/environ`.

Landlock is called through its three system calls with `ctypes`: the kernel interface is small and stable, and
no maintained Python binding exists. On kernels without it `confine` reports what it could not apply and the
worker runs with the rest.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

import msgspec

__all__ = ["Confinement", "confine", "landlock_abi"]

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
"""landlock_create_ruleset, landlock_add_rule, landlock_restrict_self (the same on both architectures)."""
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem rights (include/uapi/linux/landlock.h) and the ABI version that introduced them.
_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
"""The only rights a rule on a file (not a directory) may carry."""
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

_READ = _EXECUTE | _READ_FILE | _READ_DIR
_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/run")
"""Where programs, libraries, configuration and the kernel's views live: readable by every worker."""
_MOUNTED_SECRETS = ("/run/secrets",)
"""Where containers get their secrets (Docker, Kubernetes service account tokens): never readable."""
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/shm")  # noqa: S108
_ACCELERATORS = ("/dev/nvidia", "/dev/dri", "/dev/kfd")
"""Device nodes a worker uses (`/dev/shm` for shared memory, GPUs by name prefix); no other device is
reachable."""


class Confinement(msgspec.Struct, frozen=True):
    """What a worker may reach, decided by the server: `read` and `write` are granted, `read_files` lets it
    open the files beneath a directory by name without listing them, `shared` is writable like `write`, and
    `private` is taken away even where it lies inside a system path or a `shared` one (the data directory)."""

    read: tuple[str, ...] = ()
    read_files: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    private: tuple[str, ...] = ()


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers; 0 where it offers none."""
    numbers = _SYSCALLS.get(platform.machine())
    if not sys.platform.startswith("linux") or numbers is None:
        return 0
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def confine(confinement: Confinement) -> list[str]:
    """Apply everything the module must not have; return a line for each part this system cannot apply."""
    missing: list[str] = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        libc = _libc()
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            missing.append(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
        if not _drop_capabilities(libc):
            missing.append(f"dropping capabilities: {os.strerror(ctypes.get_errno())}")
        abi = landlock_abi()
        if abi:
            _restrict(confinement, abi)
        else:
            missing.append("Landlock: not offered by this kernel; the filesystem is not confined")
    else:
        missing.append(f"filesystem confinement: not available on {sys.platform}")
    return missing


def _drop_capabilities(libc: ctypes.CDLL) -> bool:
    """Empty the bounding, ambient, effective, permitted and inheritable sets of a process that has any (a
    server running as root); True when none is left."""
    if not _has_capabilities():
        return True
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for capability in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    return libc.capset(ctypes.byref(header), data) == 0 and not _has_capabilities()


def _has_capabilities() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
            return True
    return False


def _handled(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _restrict(confinement: Confinement, abi: int) -> None:
    libc = _libc()
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    handled = _handled(abi)
    attr = _RulesetAttr(handled, 0, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        private = [Path(p) for p in (*confinement.private, *_MOUNTED_SECRETS)] + _owner_only("/etc")
        readable = [*_SYSTEM, sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path, *confinement.read]
        rules: list[tuple[str | Path, int]] = [
            (path, _READ & handled) for path in _outside(readable, private)
        ]
        # the interpreter and the granted paths again, where they lie inside a private one
        rules += [
            (p, _READ & handled) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *confinement.read)
        ]
        rules += [(p, _READ_FILE) for p in confinement.read_files]
        rules += [(p, handled & ~_EXECUTE) for p in _DEVICES]
        rules += [(p, handled) for p in _accelerators()]
        rules += [(p, handled & ~_IOCTL_DEV) for p in confinement.write]
        rules += [(p, handled & ~_IOCTL_DEV) for p in _outside(confinement.shared, private)]
        for path, rights in rules:
            _allow(libc, add_rule, ruleset, path, rights)
        if libc.syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)


def _accelerators() -> list[Path]:
    found: list[Path] = []
    for prefix in _ACCELERATORS:
        parent, _, stem = prefix.rpartition("/")
        try:
            found += [Path(parent, name) for name in os.listdir(parent) if name.startswith(stem)]
        except OSError:
            continue
    return found


def _owner_only(directory: str) -> list[Path]:
    """The entries of `directory` that others may not read (`/etc/shadow`): a worker running as root, which
    owns them, must not either."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            continue
        if not mode & stat.S_IROTH and not stat.S_ISLNK(mode):
            found.append(Path(directory, name))
    return found


def _outside(paths: Iterable[str], private: list[Path]) -> list[Path]:
    """`paths` with every `private` directory cut out: a granted directory that holds a private one is
    replaced by its other entries, level by level down to the private one."""
    result: list[Path] = []
    for raw in paths:
        if not raw:
            continue
        path = Path(os.path.abspath(raw))
        if any(path == p or p in path.parents for p in private):
            continue
        holding = [p for p in private if path in p.parents]
        if not holding:
            result.append(path)
            continue
        try:
            entries = [path / name for name in os.listdir(path)]
        except OSError:
            continue
        result += _outside((str(entry) for entry in entries), private)
    return result


def _allow(libc: ctypes.CDLL, add_rule: int, ruleset: int, path: str | Path, rights: int) -> None:
    """Grant `rights` beneath `path` (a missing path is skipped; a file gets only the rights files take)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(add_rule, ctypes.c_int(ruleset), _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"landlock_add_rule {path}: {os.strerror(error)}")
    finally:
        os.close(fd)
