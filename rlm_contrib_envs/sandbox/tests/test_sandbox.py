"""What is particular to the sandbox: its layers, its errors, the weaker opt-in, restarts."""

from __future__ import annotations

import os
import shutil

import pytest

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_env_sandbox.env import SandboxREPL
from rlm_testkit.environments import RecordingHost

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("CI") != "true",
    reason="bubblewrap is not installed (scripts/ci/sandbox.sh)")


@pytest.fixture
def sandbox():
    envs = []

    def make(**kwargs):
        env = SandboxREPL(**kwargs)
        env.start(RecordingHost(), {})
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.shutdown()


def test_missing_bwrap_names_the_package_and_the_opt_in(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    with pytest.raises(RLMEnvironmentError) as info:
        SandboxREPL()
    text = str(info.value)
    assert "apt-get install bubblewrap" in text and "'isolation': 'rlimits'" in text


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigurationError, match="'bwrap' or 'rlimits'"):
        SandboxREPL(isolation="docker")
    with pytest.raises(ConfigurationError, match="memory_limit"):
        SandboxREPL(memory_limit="lots")
    with pytest.raises(ConfigurationError, match="pids_limit"):
        SandboxREPL(pids_limit=1)
    with pytest.raises(TypeError):
        SandboxREPL(no_such_option=1)


@needs_bwrap
def test_layers_are_in_place(sandbox):
    env = sandbox()
    r = env.execute("import os\nprint(os.getuid(), os.getpid(), os.getcwd())\n"
                    "print(sorted(os.listdir('/')))\nprint(sorted(os.environ))\n"
                    "print(open('/proc/self/status').read().split('Seccomp:')[1].split()[0])\n"
                    "print(' '.join(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
    lines = r.stdout.splitlines()
    uid, pid, cwd = lines[0].split()
    assert cwd == "/tmp" and int(pid) < 10  # its own pid namespace
    if os.geteuid() == 0:
        assert uid == "65534"
    assert "root" not in lines[1] and "home" not in lines[1] and "etc" not in lines[1]
    assert "RLM_WORKER_SECRET" not in lines[2] and "OPENAI_API_KEY" not in lines[2]
    assert lines[3] == "2"  # a seccomp filter is installed
    assert lines[4].split() == ["lo"]  # only a loopback device: no network
    report = env.isolation_report
    assert report["bwrap"] and report["network"] == "none" and report["seccomp"]


@needs_bwrap
def test_read_only_filesystem_and_private_tmp(sandbox):
    env = sandbox(disk_limit="16m")
    r = env.execute("try:\n    open('/usr/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
                    "open('/tmp/mine.txt', 'w').write('ok')\nprint(open('mine.txt').read())")
    assert r.stdout.split() == ["30", "ok"]  # EROFS, then the private directory works
    r = env.execute("open('big', 'wb').write(b'x' * (32 * 1024 * 1024))")
    assert r.error is not None and ("No space" in r.error or "File too large" in r.error)


@needs_bwrap
def test_subprocess_opt_in(sandbox):
    env = sandbox(allow_subprocess=True)
    r = env.execute("import subprocess\nprint(subprocess.run(['/usr/bin/true']).returncode)")
    assert r.error is None and r.stdout.strip() == "0"


@needs_bwrap
def test_a_dead_worker_is_replaced_with_its_contexts_and_tools():
    env = SandboxREPL()
    env.start(RecordingHost(), {"LIMIT": 3, "twice": "def twice(x):\n    return 2 * x"})
    try:
        env.add_context("the context", 0)
        env.execute("mine = 1")
        r = env.execute("import os\nos._exit(9)")
        assert r.error is not None and "exited with status 9" in r.error
        assert "variables you created are gone" in r.error
        r = env.execute("print(context, LIMIT, twice(2), 'mine' in globals())")
        assert r.stdout.strip() == "the context 3 4 False"
        assert env.restarts == 1
    finally:
        env.shutdown()


@needs_bwrap
def test_garbage_on_the_channel_is_cut_off_and_recovered(sandbox):
    env = sandbox()
    r = env.execute("import os\nfor fd in range(3, 20):\n    try:\n"
                    "        os.write(fd, b'\\xff\\xff\\xff\\xff garbage')\n    except OSError:\n"
                    "        pass\nimport time\ntime.sleep(2)")
    assert r.error is not None and "protocol" in r.error
    assert env.execute("print('fresh')").stdout.strip() == "fresh"


@needs_bwrap
def test_unresponsive_worker_is_killed_after_the_backstop(sandbox):
    # A C call that holds the interpreter (a huge regex backtrack) cannot be interrupted.
    env = sandbox(timeout_grace=0.2)
    env.execute("x = 5")
    r = env.execute("import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')", timeout=0.3)
    assert r.timed_out and "did not respond" in r.error
    assert env.execute("print('back')").stdout.strip() == "back"


def test_rlimits_mode_is_the_explicit_weaker_opt_in(sandbox):
    env = sandbox(isolation="rlimits")
    assert env.capabilities.isolated is False
    r = env.execute("import os\nprint(os.getpid() != 1, sorted(os.environ)[:3])\n"
                    "print(llm_query('x'))")
    assert r.error is None and "llm:x" in r.stdout
    assert "RLM_WORKER_SECRET" not in r.stdout


@needs_bwrap
def test_shutdown_leaves_no_cgroup_and_no_process():
    env = SandboxREPL()
    env.start(RecordingHost(), {})
    env.execute("import threading, time\n"
                "[threading.Thread(target=time.sleep, args=(60,), daemon=True).start() "
                "for _ in range(3)]")
    cap = env._cgroup
    dirs = list(cap.dirs) if cap else []
    procs = list(cap.procs) if cap else []
    env.shutdown()
    assert not [d for d in dirs if os.path.exists(d)]
    for path in procs:
        assert not os.path.exists(path)


def test_cgroups_of_dead_hosts_are_reaped(tmp_path):
    """A host killed outright leaves its empty cgroup: the next sandbox removes it; those of a
    live host, one still in use (here: not empty) and foreign names stay."""
    import subprocess
    import sys

    from rlm_env_sandbox._limits import reap_cgroups

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"dead": f"rlm-sandbox-{dead.pid}-1-0", "live": f"rlm-sandbox-{os.getpid()}-1-0",
             "busy": f"rlm-sandbox-{dead.pid}-2-0", "other": "not-ours-1"}
    for name in names.values():
        (tmp_path / name).mkdir()
    (tmp_path / names["busy"] / "cgroup.procs").write_text("1\n")  # rmdir fails, as on EBUSY
    assert reap_cgroups(str(tmp_path), min_age=3600) == []  # too young: maybe being set up
    assert reap_cgroups(str(tmp_path), min_age=0) == [str(tmp_path / names["dead"])]
    assert sorted(os.listdir(tmp_path)) == sorted(n for k, n in names.items() if k != "dead")
