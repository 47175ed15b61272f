"""The progress line: drawn only on a terminal, with turn, sub-calls, tokens, cost and time."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _trajectories import responder

from rlm import RLM
from rlm_plugins.viewer.progress import ProgressSink


def test_line_counts_turns_subcalls_tokens_and_cost():
    stream = io.StringIO()
    sink = ProgressSink(stream, force=True, fps=1e6)
    seen: list[str] = []
    orig = sink.handle

    def spy(event):
        orig(event)
        if sink._root is not None:
            seen.append(sink.line())

    sink.handle = spy  # type: ignore[method-assign]
    with RLM(backend="scripted", backend_kwargs={"responder": responder(3), "prices": (1.0, 1.0)},
             max_depth=2, max_iterations=7, sinks=[sink]) as rlm:
        result = rlm.completion("ROOT ctx")
    assert any(s.startswith("turn 1/7 · sub-calls 1 running, 0 done") for s in seen)
    assert any("sub-calls 0 running, 4 done · 1 child runs" in s for s in seen)
    assert any(s.startswith("turn 2/7") for s in seen)
    assert sink._tokens == result.usage_summary.total_tokens
    out = stream.getvalue()
    assert "\r" in out and "turn 2/7" in out and "$" in out
    assert out.endswith("\r")  # the line is erased at the end


def test_silent_when_not_a_terminal():
    stream = io.StringIO()  # isatty() is False
    sink = ProgressSink(stream)
    with RLM(backend="scripted", backend_kwargs={"replies": ["FINAL(1)"]}, sinks=[sink]) as rlm:
        rlm.completion("x")
    assert stream.getvalue() == ""


def test_rlm_run_draws_progress_on_a_terminal(tmp_path: Path):
    replies = json.dumps(["```repl\nprint(llm_query('a'))\n```", "b", "FINAL(done)"])
    master, slave = pty.openpty()
    env = {**os.environ, "RLM_USER_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "rlm", "run", "q", "--backend", "scripted",
                             "--backend-arg", f"replies={replies}", "--backend-arg", "latency=1.2"],
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(30)
    os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.stdout.read().decode().strip() == "done"
    assert "turn 1/30" in err and "sub-calls" in err and "tokens" in err
    assert "logged as run" in err
