"""`rlm` on a real terminal (tmux): the live progress line, and Ctrl+C exiting with 130.

Needs tmux (scripts/ci/tmux.sh installs it in CI); skipped when it is missing.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/ci/tmux.sh)")

RLM_EXE = str(Path(sys.executable).with_name("rlm"))


class Terminal:
    """A detached tmux session running one shell command on a real pseudo-terminal, on a tmux
    server of its own (its socket in the test's directory): tests running at once, or anyone
    else's tmux, never share a server."""

    def __init__(self, command: str, home: Path):
        self.name = f"rlm-test-{uuid.uuid4().hex[:8]}"
        self.tmux = ["tmux", "-S", str(home / "tmux.sock")]
        env = f"RLM_USER_DIR={shlex.quote(str(home))} "
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50",
                        f"{env}{command}; echo EXIT=$?; sleep 30"], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def _cmd(*replies: str, extra: str = "") -> str:
    return (f"{shlex.quote(RLM_EXE)} q -b scripted --backend-arg "
            f"{shlex.quote('replies=' + json.dumps(list(replies)))} {extra}")


def test_ctrl_c_exits_130(home: Path):
    term = Terminal(_cmd("```repl\nimport time; time.sleep(60)\n```", "FINAL(x)"), home)
    try:
        term.wait_for("turn 1/30")  # the live line: the run is under way
        time.sleep(0.5)
        term.keys("C-c")
        screen = term.wait_for("EXIT=", timeout=30)
        assert "EXIT=130" in screen, screen
        assert "Traceback" not in screen
    finally:
        term.close()


def test_live_progress_line_on_a_terminal(home: Path):
    loop = "```repl\nprint(1)\n```"
    term = Terminal(_cmd(loop, loop, "FINAL(done)", extra="--backend-arg latency=1.5"), home)
    try:
        screen = term.wait_for("turn 2/30")  # redrawn in place while the run goes
        assert "sub-calls 0 running" in screen and "tokens" in screen
        screen = term.wait_for("EXIT=")
        assert "EXIT=0" in screen and "done" in screen
        assert "rlm: backend scripted, model scripted (from -b/--backend)" in screen
        assert "turn 1/30 done in" not in screen  # plain lines are for non-terminals only
    finally:
        term.close()
