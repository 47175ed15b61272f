"""What isolated environments leave behind when a program ends without shutting them down:
nothing. Open REPLs are shut down at exit; provider leftovers are released once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from rlm.isolation.leftovers import Leftovers


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


SCRIPT = textwrap.dedent("""
    import json, os, sys
    from rlm.isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess
    from rlm_testkit.environments import RecordingHost

    class Local(IsolatedREPL):
        environment_name = "leftover-probe"

        def _launch(self, run_dir, secret):
            self._worker_ctx_dir = os.path.join(run_dir, "ctx")
            self.proc = WorkerProcess([sys.executable, "-I", "-S", WORKER_FILE, "--stdio"],
                                      env={"RLM_WORKER_SECRET": secret.decode()})
            return self.proc

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
