"""What isolated environments leave behind when a program ends without shutting them down:
nothing. Open REPLs are shut down at exit; provider leftovers are released once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from rlm_isolation.leftovers import Leftovers


def test_leftovers_release_what_is_still_there_once_and_swallow_errors():
    calls: list[str] = []
    reg = Leftovers()

    def boom() -> None:
        calls.append("boom")
        raise RuntimeError("already gone")

    reg.add("a", lambda: calls.append("a"))
    reg.add("b", boom)
    reg.add("c", lambda: calls.append("c"))
    reg.discard("c")  # deleted while the program ran
    assert "a" in reg and "c" not in reg
    reg.release_all()
    reg.release_all()
    assert sorted(calls) == ["a", "boom"]


#: A minimal isolated REPL on the worker process (the probe both host scripts below run).
PROBE = textwrap.dedent("""
    import json, os, sys, time
    from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess
    from rlm_testkit.environments import RecordingHost

    class Local(IsolatedREPL):
        def _launch(self, run_dir, secret):
            self._worker_ctx_dir = os.path.join(run_dir, "ctx")
            self.proc = WorkerProcess([sys.executable, "-I", "-S", WORKER_FILE, "--stdio"],
                                      env={"RLM_WORKER_SECRET": secret.decode()})
            return self.proc
""")

SCRIPT = PROBE + textwrap.dedent("""
    Local.environment_name = "leftover-probe"

    repl = Local(memory_limit=None)
    repl.start(RecordingHost(), {})
    repl.add_context("x" * 1000, 0)
    assert repl.execute("print(len(context))").stdout.strip() == "1000"
    print(json.dumps({"run_dir": repl._run_dir, "pid": repl.proc.proc.pid}), flush=True)
    # no shutdown(): the program just ends
""")


def test_an_open_repl_is_shut_down_when_the_program_ends(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert not os.path.exists(info["run_dir"])  # the run directory went with it
    deadline = time.monotonic() + 10
    while True:  # the worker process is gone (killed, then reaped by init)
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{info['pid']}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                break  # a zombie: dead, waiting for init to reap it
        assert time.monotonic() < deadline, "the worker outlived the program"
        time.sleep(0.05)


# --- run directories: private, locked by their owner, reaped once the owner is gone ------------

OWNER = textwrap.dedent("""
    import json, os, sys, time
    from rlm_isolation.leftovers import make_run_dir
    path, fd = make_run_dir("rlm-probe-")
    print(json.dumps({"path": path}), flush=True)
    time.sleep(60)
""")


def _owner(tmp_path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    return proc, json.loads(proc.stdout.readline())["path"]


def test_a_run_directory_is_private_and_kept_while_its_owner_lives(tmp_path):
    from rlm_isolation.leftovers import OWNER_FILE, reap_run_dirs

    proc, path = _owner(tmp_path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o700
        assert os.listdir(path) == [OWNER_FILE]
        assert reap_run_dirs(str(tmp_path)) == []
        assert os.path.isdir(path)
    finally:
        proc.kill()
        proc.wait()
    assert reap_run_dirs(str(tmp_path)) == [path]  # killed outright: the next start reaps it
    assert not os.path.exists(path)


def test_the_reaper_leaves_what_is_not_a_run_directory(tmp_path):
    from rlm_isolation.leftovers import reap_run_dirs

    (tmp_path / "rlm-not-a-run").mkdir()
    (tmp_path / "rlm-file").write_text("x")
    (tmp_path / "other").mkdir()
    assert reap_run_dirs(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path)) == ["other", "rlm-file", "rlm-not-a-run"]


def test_host_identity_tells_a_dead_host_from_a_live_one():
    from rlm_isolation.leftovers import host_identity, host_is_gone

    assert not host_is_gone(host_identity())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = host_identity(proc.pid)
    proc.wait()
    assert host_is_gone(identity)
    machine = identity.rsplit("/", 2)[0]
    assert not host_is_gone(f"another-machine/pid:[1]/{proc.pid}/1")  # no telling: kept
    assert host_is_gone(f"{machine}/{os.getpid()}/1")  # the pid is another process now
    assert not host_is_gone("")


SIGTERMED = PROBE + textwrap.dedent("""
    Local.environment_name = "sigterm-probe"

    repl = Local(memory_limit=None)
    repl.start(RecordingHost(), {})
    print(json.dumps({"run_dir": repl._run_dir, "pid": repl.proc.proc.pid}), flush=True)
    repl.execute("while True:\\n    pass")  # busy when SIGTERM arrives
""")


def test_sigterm_removes_the_run_directory_and_still_ends_the_program(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-c", SIGTERMED], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    info = json.loads(proc.stdout.readline())
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    assert not os.path.exists(info["run_dir"])


def test_a_program_s_own_sigterm_handler_is_left_alone(tmp_path):
    script = ("import signal\nsignal.signal(signal.SIGTERM, lambda s, f: None)\n"
              + SIGTERMED.replace("repl.execute(", "print(signal.getsignal(signal.SIGTERM)"
                                  ".__name__, flush=True)\n#"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "<lambda>"


def test_sigterm_still_ends_the_program_when_a_shutdown_hangs(tmp_path):
    """A REPL whose shutdown never returns cannot make the program ignore SIGTERM: after
    SIGTERM_GRACE seconds it is killed outright."""
    import signal

    script = textwrap.dedent("""
        import threading, time
        from rlm_isolation import leftovers

        class Stuck:
            def shutdown(self):
                threading.Event().wait()

        stuck = Stuck()  # (the registry holds REPLs weakly)
        leftovers.track_open(stuck)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGKILL
