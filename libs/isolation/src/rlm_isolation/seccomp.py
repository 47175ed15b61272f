"""The syscall policy of every process environment, in one place.

The ``sandbox`` environment hands the compiled program to bubblewrap (``bwrap --seccomp FD``:
:func:`program_fd`); the ``docker`` environment writes it into the run's control directory and the
container's boot script installs it on the worker before any model code runs
(:func:`compile_program`), on top of Docker's own profile. Both build it here, from
:data:`DENIED_SYSCALLS` and :func:`rules`, so the two cannot drift apart.

The policy, default allow, then:

* :data:`DENIED_SYSCALLS` fail with ``EPERM``: debugging other processes, mounts and namespaces,
  kernel modules and kexec, BPF and perf, keyrings, setting the clock, io_uring, fanotify,
  handles to other files, personality changes, and the places a cell could park memory outside
  every file-size and tmpfs limit (System V shared memory and message queues, ``memfd_create``);
* ``clone3`` fails with ``ENOSYS`` (glibc then falls back to ``clone``, whose flags a filter can
  see: threads keep working);
* sockets other than ``AF_UNIX`` fail with ``EAFNOSUPPORT``;
* unless ``allow_subprocess``: ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD`` fail with
  ``EPERM`` (no new processes).

Compiling needs ``pyseccomp`` and libseccomp (a dependency of the distributions that use it; the
kernel itself does not import it at module level). Pure functions, safe from any thread.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from typing import Any

DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes' memory and descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "pidfd_open",
    # mounts and namespaces
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    # the kernel itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "swapon",
    "swapoff", "acct", "quotactl", "iopl", "ioperm", "syslog", "personality",
    "lookup_dcookie", "fanotify_init",
    # files by handle, device nodes
    "open_by_handle_at", "name_to_handle_at", "mknod", "mknodat",
    # io_uring (its own path around this filter)
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # the clock
    "clock_settime", "settimeofday", "adjtimex", "clock_adjtime",
    # memory outside every file-size and tmpfs limit
    "memfd_create", "shmget", "shmat", "msgget", "msgsnd", "semget",
)
CLONE_THREAD = 0x00010000
AF_UNIX = 1


@dataclass(frozen=True)
class Rule:
    """One rule: ``syscall`` answers ``-errno``; ``arg`` is ``(index, op, value[, mask])`` with
    ``op`` one of ``"ne"`` or ``"masked_eq"`` (the rule applies only when it holds)."""

    syscall: str
    errno: int
    arg: tuple[Any, ...] | None = None


def rules(*, allow_subprocess: bool) -> tuple[Rule, ...]:
    """The whole policy as data (see the module's docstring)."""
    out = [Rule(name, errno.EPERM) for name in DENIED_SYSCALLS]
    out.append(Rule("clone3", errno.ENOSYS))
    out.append(Rule("socket", errno.EAFNOSUPPORT, (0, "ne", AF_UNIX)))
    if not allow_subprocess:
        out += [Rule("fork", errno.EPERM), Rule("vfork", errno.EPERM),
                Rule("clone", errno.EPERM, (0, "masked_eq", CLONE_THREAD, 0))]
    return tuple(out)


def build_filter(*, allow_subprocess: bool) -> Any:
    """A ``pyseccomp.SyscallFilter`` holding :func:`rules` (syscalls unknown on this
    architecture are left out)."""
    import pyseccomp as sc

    flt = sc.SyscallFilter(sc.ALLOW)
    for rule in rules(allow_subprocess=allow_subprocess):
        args = []
        if rule.arg is not None:
            index, op, *values = rule.arg
            args.append(sc.Arg(index, sc.NE if op == "ne" else sc.MASKED_EQ, *values))
        try:
            flt.add_rule(sc.ERRNO(rule.errno), rule.syscall, *args)
        except (ValueError, RuntimeError, OSError):  # unknown on this architecture
            continue
    return flt


def compile_program(*, allow_subprocess: bool) -> bytes:
    """The BPF program (``struct sock_filter[]``) as bytes, for ``prctl(PR_SET_SECCOMP)``."""
    with tempfile.TemporaryFile() as f:
        build_filter(allow_subprocess=allow_subprocess).export_bpf(f)
        f.flush()
        f.seek(0)
        return f.read()


def program_fd(*, allow_subprocess: bool) -> int:
    """A file descriptor at offset 0 holding :func:`compile_program`'s bytes (for
    ``bwrap --seccomp FD``); the caller closes it once the process that reads it started."""
    with tempfile.TemporaryFile() as f:
        f.write(compile_program(allow_subprocess=allow_subprocess))
        f.flush()
        fd = os.dup(f.fileno())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


__all__ = ["AF_UNIX", "CLONE_THREAD", "DENIED_SYSCALLS", "Rule", "build_filter",
           "compile_program", "program_fd", "rules"]
