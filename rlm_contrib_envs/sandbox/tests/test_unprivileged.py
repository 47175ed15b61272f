"""The sandbox run by a host that is not root: no cgroup can be made, so only the sizes of the
sandbox's tmpfs and the rlimits stand between a cell and the host's memory.

The host here is a real process running as ``nobody`` (uid 65534, through ``setpriv``) with the
system's ``python3`` and this checkout's packages. Needs root (to become ``nobody``), bubblewrap
and unprivileged user namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

from rlm_testkit.environments import ESCAPE_ATTEMPTS

NOBODY = 65534
PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None or shutil.which("setpriv") is None
    or PYTHON is None or os.path.realpath(PYTHON).startswith("/root"),
    reason="needs root (to start a host as nobody), bubblewrap, setpriv and a system python3")

FILL = next(a for a in ESCAPE_ATTEMPTS if a.id == "fill-every-writable-place").code

HOST = textwrap.dedent("""
    import json, os, site, sys, tempfile
    for d in json.loads(sys.argv[1]):
        site.addsitedir(d)
    from rlm_testkit.environments import RecordingHost
    from rlm_testkit.helpers import isolated_plugin_manager
    from rlm_testkit.hostdeath import listing

    env = isolated_plugin_manager("rlm_env_sandbox.plugin").create(
        "environment", "sandbox", memory_limit="512m", disk_limit="64m", pids_limit=32)
    env.start(RecordingHost(), {})
    env.add_context("a context private to this run", 0)
    files = listing(tempfile.gettempdir())
    fill = env.execute(sys.stdin.read(), timeout=120)
    again = env.execute("print(len(context))", timeout=30)
    report = env.isolation_report
    env.shutdown()
    print(json.dumps({"uid": os.geteuid(), "files": files, "fill": fill.stdout,
                      "fill_error": fill.error, "again": again.stdout, "report": report,
                      "left": os.listdir(tempfile.gettempdir())}))
""")


@pytest.fixture(scope="module")
def unprivileged_run() -> dict:
    tmp = tempfile.mkdtemp(prefix="rlm-unprivileged-")
    os.chown(tmp, NOBODY, NOBODY)
    sites = [p for p in site.getsitepackages() if os.path.isdir(p)]
    try:
        out = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
             PYTHON, "-c", HOST, json.dumps(sites)],
            input=FILL, capture_output=True, text=True, timeout=300, cwd="/",
            env={"PATH": "/usr/bin:/bin", "TMPDIR": tmp, "HOME": tmp, "LANG": "C.UTF-8"})
        if out.returncode != 0 and "PermissionError" in out.stderr and \
                os.path.realpath(sys.prefix).startswith("/root"):
            pytest.skip("the checkout's packages are not readable by nobody")
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_host_really_is_unprivileged_without_a_memory_cgroup(unprivileged_run: dict) -> None:
    assert unprivileged_run["uid"] == NOBODY
    assert "memory" not in (unprivileged_run["report"].get("cgroup") or {})


def test_every_writable_place_is_read_only_or_size_limited(unprivileged_run: dict) -> None:
    out = unprivileged_run["fill"]
    assert "EXHAUSTED-NOT" not in out, out
    assert "blocked /tmp" in out and "blocked / " in out, out
    assert unprivileged_run["again"].strip() == str(len("a context private to this run"))
    writable = unprivileged_run["report"]["writable"]
    assert writable == {"/tmp": 64 * 2**20, "/dev/shm": 64 * 2**20}


def test_run_files_are_private_to_the_run(unprivileged_run: dict) -> None:
    files = unprivileged_run["files"]
    assert files, "the run directory was not in TMPDIR"
    for path, (mode, uid) in files.items():
        assert mode & 0o077 == 0, f"{path} is mode {stat.filemode(mode)}: readable by others"
        assert uid == NOBODY, f"{path} belongs to uid {uid}"


def test_nothing_is_left_after_shutdown(unprivileged_run: dict) -> None:
    assert unprivileged_run["left"] == []
