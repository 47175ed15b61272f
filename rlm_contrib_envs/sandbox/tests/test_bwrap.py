"""``rlm_env_sandbox.bwrap``: the confinement the sandbox and the cloud emulators share, run for
real (what a confined command sees), plus the errors that name the missing program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from rlm.exceptions import RLMEnvironmentError
from rlm_env_sandbox.bwrap import bwrap_command, drop_root, find_bwrap

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("CI") != "true",
    reason="bubblewrap is not installed (scripts/ci/sandbox.sh)")

PROBE = r"""
import json, os, socket
print(json.dumps({
    "uid": os.getuid(), "cwd": os.getcwd(), "host": socket.gethostname(),
    "env": sorted(os.environ), "nets": sorted(os.listdir("/sys/class/net"))
        if os.path.isdir("/sys/class/net") else None,
    "pid": os.getpid(), "home_exists": os.path.exists(os.path.expanduser("~root")),
    "usr_writable": os.access("/usr", os.W_OK),
    "etc_passwd": os.path.exists("/etc/passwd"),
}))
"""


def _python() -> str:
    """An interpreter the confined command can reach: under /usr."""
    path = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if path is None or not os.path.realpath(path).startswith("/usr/"):
        pytest.skip("no python3 under /usr to run inside the bubblewrap sandbox")
    return path


def _run(tmp_path, **options):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    argv = bwrap_command([_python(), "-I", "-S", "-c", PROBE], bwrap=find_bwrap("this test"),
                         hostname="probe-host", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ONLY": "1"},
                         chdir="/work", mounts=["--bind", str(work), "/work"], **options)
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HOST_SECRET": "x"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_bwrap
def test_the_confined_command_sees_only_what_it_was_given(tmp_path):
    seen = _run(tmp_path)
    assert seen["host"] == "probe-host"
    assert seen["cwd"] == "/work"
    # --clearenv: only the variables passed (bwrap itself may add PWD), none of the host's
    assert set(seen["env"]) - {"PWD"} == {"PATH", "LANG", "ONLY"}
    assert seen["usr_writable"] is False
    assert seen["etc_passwd"] is False  # no host path besides the system mounts
    assert seen["nets"] in (None, ["lo"])  # a network namespace of its own


@needs_bwrap
def test_as_pid_1_and_uid_inside(tmp_path):
    seen = _run(tmp_path, as_pid_1=True, uid=0)
    assert seen["pid"] == 1
    assert seen["uid"] == 0
    assert _run(tmp_path)["pid"] != 1  # bwrap's own init is pid 1 otherwise


def test_network_option_keeps_or_drops_the_network_namespace():
    closed = bwrap_command(["true"], bwrap="bwrap", hostname="h", env={}, chdir="/")
    opened = bwrap_command(["true"], bwrap="bwrap", hostname="h", env={}, chdir="/",
                           network=True)
    assert "--unshare-all" in closed
    assert "--unshare-all" not in opened and "--unshare-net" not in opened
    for argv in (closed, opened):  # everything but the network is still unshared
        assert {"--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                "--clearenv"} <= set(argv)
        assert argv[-2:] == ["--", "true"]


def test_seccomp_fd_and_mounts_come_before_the_command():
    argv = bwrap_command([sys.executable, "-c", "pass"], bwrap="bwrap", hostname="h",
                         env={"A": "b"}, chdir="/x", mounts=["--tmpfs", "/x"], seccomp_fd=7)
    end = argv.index("--")
    assert argv[end + 1:] == [sys.executable, "-c", "pass"]
    assert argv.index("--proc") < argv.index("--tmpfs") < end
    assert argv[argv.index("--seccomp") + 1] == "7"
    assert argv[argv.index("--setenv"):argv.index("--setenv") + 3] == ["--setenv", "A", "b"]


def test_missing_programs_are_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(RLMEnvironmentError, match=r"the emulator needs bubblewrap.*apt-get"):
        find_bwrap("the emulator")
    with pytest.raises(RLMEnvironmentError, match=r"setpriv.*util-linux"):
        drop_root(65534)
