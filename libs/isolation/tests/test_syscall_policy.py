"""One syscall policy (``rlm_isolation.seccomp``), applied by both the sandbox and docker.

What the filter does inside each environment is judged by the escape suite (the
``unprivileged-syscalls``, ``fork``, ``namespaces-and-mounts``... attempts); here: both
environments install exactly the program the shared module compiles, and the policy holds every
syscall either environment ever denied.
"""

from __future__ import annotations

import errno
import os

import pytest

from rlm_isolation import seccomp

pyseccomp = pytest.importorskip("pyseccomp")

#: The union of the two lists that had drifted apart (sandbox: clock and fanotify, docker:
#: pidfd_open), and what the escape suite's unprivileged-syscalls attempt needs.
MUST_DENY = {"adjtimex", "clock_settime", "clock_adjtime", "settimeofday", "fanotify_init",
             "lookup_dcookie", "pidfd_open", "ptrace", "mount", "unshare", "bpf", "keyctl",
             "io_uring_setup", "memfd_create", "shmget", "msgget", "semget"}


def test_the_policy_denies_what_either_environment_denied() -> None:
    missing = MUST_DENY - set(seccomp.DENIED_SYSCALLS)
    assert not missing, f"the shared policy lost {sorted(missing)}"
    assert len(set(seccomp.DENIED_SYSCALLS)) == len(seccomp.DENIED_SYSCALLS)


@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_rules_follow_allow_subprocess(allow_subprocess: bool) -> None:
    names = {r.syscall for r in seccomp.rules(allow_subprocess=allow_subprocess)}
    assert ({"fork", "vfork", "clone"} <= names) is (not allow_subprocess)
    socket_rule = next(r for r in seccomp.rules(allow_subprocess=allow_subprocess)
                       if r.syscall == "socket")
    assert socket_rule.errno == errno.EAFNOSUPPORT and socket_rule.arg == (0, "ne", 1)


@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_program_fd_holds_the_compiled_program(allow_subprocess: bool) -> None:
    fd = seccomp.program_fd(allow_subprocess=allow_subprocess)
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
    finally:
        os.close(fd)
    assert data == seccomp.compile_program(allow_subprocess=allow_subprocess)
    assert data and len(data) % 8 == 0  # struct sock_filter[]


@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_the_sandbox_installs_the_shared_program(allow_subprocess: bool) -> None:
    limits = pytest.importorskip("rlm_env_sandbox._limits")
    fd = limits.seccomp_program(allow_subprocess=allow_subprocess)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)
    assert data == seccomp.compile_program(allow_subprocess=allow_subprocess)


@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_docker_installs_the_shared_program(allow_subprocess: bool) -> None:
    module = pytest.importorskip("rlm_env_docker._seccomp")
    assert module.compile_filter(allow_subprocess=allow_subprocess) == \
        seccomp.compile_program(allow_subprocess=allow_subprocess)


def test_the_comparison_can_fail() -> None:
    """A different policy compiles to a different program, so the comparisons above can fail."""
    assert seccomp.compile_program(allow_subprocess=False) != \
        seccomp.compile_program(allow_subprocess=True)
