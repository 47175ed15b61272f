"""Hostile cells against the host end of an isolated REPL (issue 16), on a plain local worker
process (no sandbox: what is checked is the host's side of the channel, which every isolated
environment shares): forged result frames, stderr floods, text no codec takes."""

from __future__ import annotations

import os
import sys
import time

import pytest

from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, WorkerProcess
from rlm_isolation.streams import PARTIAL_CHARS
from rlm.types import EnvironmentCapabilities


class PipeREPL(IsolatedREPL):
    """The worker as a plain subprocess over its stdin/stdout (contexts streamed over the
    channel)."""

    environment_name = "pipe"
    capabilities = EnvironmentCapabilities(isolated=False, persistent=True, cell_timeout=True,
                                           threads=True, callables_as_tools=False,
                                           memory_limit=False)

    def _launch(self, run_dir, secret):
        self._worker_ctx_dir = os.path.join(run_dir, "ctx")
        return WorkerProcess([sys.executable, "-I", "-S", WORKER_FILE, "--stdio"],
                             env={"RLM_WORKER_SECRET": secret.decode(), "PATH": os.environ["PATH"]},
                             what="pipe worker")


@pytest.fixture
def env():
    repl = PipeREPL(memory_limit=None, max_output_chars=1000, cell_timeout=20)
    repl.start(None, {})
    yield repl
    repl.shutdown()


FORGE = """
import gc
w = next(o for o in gc.get_objects() if type(o).__name__ == 'Worker' and hasattr(o, 'send'))
cell = max(k for k in [w.runner.job_cell] if k is not None)
w.send({'t': 'result', 'id': cell, 'stdout': 'A' * 3_000_000, 'stderr': 'B' * 3_000_000,
        'error': 'C' * 3_000_000, 'variables': ['v' * 5000] * 5000, 'final_answer': None,
        'answer_content': None, 'timed_out': False})
"""


def test_a_forged_result_frame_is_cut_to_max_output_chars_on_the_host(env):
    result = env.execute(FORGE)
    assert result.stdout.startswith("A" * 500) and len(result.stdout) < 1200
    assert "3,000,000 characters" in result.stdout
    assert len(result.stderr) < 1200 and len(result.error or "") < 1200
    assert len(result.variables) <= 1000 and all(len(v) <= 200 for v in result.variables)


def test_an_unterminated_stderr_flood_keeps_a_bounded_tail_read_in_blocks(env):
    r = env.execute("import os\nfor _ in range(8):\n    os.write(2, b'e' * (1 << 20))\n"
                    "os.write(2, b'END')")
    assert r.error is None, r.error
    deadline = time.monotonic() + 10
    tail = ""
    while time.monotonic() < deadline and not tail.endswith("END"):
        time.sleep(0.05)
        tail = env._proc.stderr_tail()
    assert tail.endswith("e" * 100 + "END"), "the unfinished line is not in the tail"
    assert len(tail) <= PARTIAL_CHARS


def test_a_result_the_worker_cannot_send_is_reported_not_a_timeout(env):
    r = env.execute("kept = 1\nanswer['content'] = 'z' * (70 << 20)")  # over the 64 MB frame
    assert r.error is not None and "could not send this cell's result" in r.error
    assert not r.timed_out and env.restarts == 0
    r = env.execute("answer['content'] = ''\nprint(kept)")
    assert r.stdout == "1\n"
