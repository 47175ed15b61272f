"""Bubblewrap command lines: the confinement every bubblewrap user in this repository shares.

The ``sandbox`` environment and the local emulators of cloud sandboxes (``*_emulator`` in the modal, e2b and daytona
distributions' tests)
build their ``bwrap`` command with :func:`bwrap_command`: new user, pid, IPC, UTS and cgroup
namespaces (and a network namespace of its own, with only a loopback nobody listens on, unless
``network=True``), no further user namespaces, killed with its parent, a new session (no
terminal to inject input into), a hostname of its own, none of the host's environment
variables, the host's ``/usr`` and top-level ``/bin``, ``/lib``... read-only, a fresh ``/proc``
and a minimal ``/dev``. What each caller adds (its writable directories, a tmpfs, a seccomp
filter) goes in ``mounts`` and ``seccomp_fd``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

from rlm.exceptions import RLMEnvironmentError

#: Top-level directories of the host's system, mounted as the host has them (merged-``/usr``
#: symlinks stay symlinks, real directories are bound read-only).
SYSTEM_TOPS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
INSTALL_HINT = ("Install it with `apt-get install bubblewrap` (Debian, Ubuntu), `dnf install "
                "bubblewrap` (Fedora) or `apk add bubblewrap` (Alpine)")


def find_bwrap(what: str) -> str:
    """The path of ``bwrap``; :class:`RLMEnvironmentError` naming ``what`` needs it if missing."""
    path = shutil.which("bwrap")
    if path is None:
        raise RLMEnvironmentError(f"{what} needs bubblewrap (the 'bwrap' program), which is not "
                                  f"installed. {INSTALL_HINT}.")
    return path


def drop_root(uid: int) -> list[str]:
    """The ``setpriv`` prefix that runs the rest of a command line as ``uid`` (group too), with
    no supplementary groups; for a host process running as root."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RLMEnvironmentError("dropping root needs 'setpriv' (util-linux), which is not "
                                  "installed: apt-get install util-linux")
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def system_mounts() -> list[str]:
    """``bwrap`` arguments mounting the host's ``/usr`` and :data:`SYSTEM_TOPS` read-only."""
    argv = ["--ro-bind", "/usr", "/usr"]
    for top in SYSTEM_TOPS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    return argv


def bwrap_command(command: Sequence[str], *, bwrap: str, hostname: str,
                  env: Mapping[str, str], chdir: str, mounts: Sequence[str] = (),
                  network: bool = False, as_pid_1: bool = False, uid: int | None = None,
                  seccomp_fd: int | None = None) -> list[str]:
    """The ``bwrap`` command line that runs ``command`` confined as described in this module.

    Args:
        command: the program and its arguments, as seen inside.
        bwrap: the ``bwrap`` executable (:func:`find_bwrap`).
        hostname: the host name inside.
        env: the whole environment inside (nothing else of the host's is kept).
        chdir: the working directory inside.
        mounts: further ``bwrap`` arguments, applied after the system mounts, ``/proc`` and
            ``/dev`` (writable binds, a ``--tmpfs``, ``--dir``, ``--symlink``...).
        network: keep the host's network namespace (default: one of its own, no network).
        as_pid_1: run ``command`` as pid 1 of its pid namespace, as a container's init: the
            kernel delivers it only the signals it handles.
        uid: the user id (and group id) seen inside (default: the caller's).
        seccomp_fd: an open file descriptor with a compiled seccomp program to install (it must
            be passed to the ``bwrap`` process).
    """
    if network:
        argv = [bwrap, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
                "--unshare-cgroup-try"]
    else:
        argv = [bwrap, "--unshare-all", "--unshare-user"]
    if uid is not None:
        argv += ["--uid", str(uid), "--gid", str(uid)]
    argv += ["--disable-userns", "--die-with-parent", "--new-session"]
    if as_pid_1:
        argv.append("--as-pid-1")
    argv += ["--hostname", hostname, "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv += [*system_mounts(), "--proc", "/proc", "--dev", "/dev", *mounts]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--chdir", chdir, "--", *command]
    return argv


__all__ = ["INSTALL_HINT", "SYSTEM_TOPS", "bwrap_command", "drop_root", "find_bwrap",
           "system_mounts"]
