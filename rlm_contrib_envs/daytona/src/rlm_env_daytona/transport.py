"""The worker's channel over a Daytona session command: stdout streamed, stdin sent.

The worker runs ``--text`` (every frame one ``@<base64>`` line) as an asynchronous command of a
session of its own. The host side is a :class:`~rlm_isolation.textstream.TextLineStream`:

* worker -> host: the SDK's ``get_session_command_logs_async`` (a WebSocket that follows the
  command's output, stdout and stderr apart) feeds it, on a thread of its own;
* host -> worker: each line goes through ``send_session_command_input`` (the toolbox's
  ``POST .../command/{id}/input``, written to the command's stdin). The command is started with
  ``suppress_input_echo`` so the daemon does not copy that input back into the output;
* when the log stream ends (the worker exited, the sandbox died) the command's exit code is
  fetched and readers see end-of-stream; a watchdog also checks the sandbox's state every
  ``health_interval`` seconds, so a sandbox that dies without closing the stream ends the run
  instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from rlm_isolation.textstream import TextLineStream

from ._sdk import sdk


class SessionWorker(TextLineStream):
    """A :class:`TextLineStream` bound to one session command in one sandbox."""

    def __init__(self, sandbox: Any, session_id: str, command_id: str, *,
                 health_interval: float | None = 10.0):
        self.sandbox = sandbox
        self.session_id = session_id
        self.command_id = command_id
        self.health_interval = health_interval
        self.sent = 0
        self._stopped = threading.Event()
        super().__init__(self._send_line, self._stop, what="daytona sandbox")
        threading.Thread(target=self._follow, name=f"rlm-daytona-logs-{session_id}",
                         daemon=True).start()
        if health_interval:
            threading.Thread(target=self._watch, name=f"rlm-daytona-health-{session_id}",
                             daemon=True).start()

    def _send_line(self, line: str) -> None:
        daytona = sdk()
        try:
            self.sandbox.process.send_session_command_input(self.session_id, self.command_id,
                                                            line)
        except daytona.DaytonaError as exc:
            raise BrokenPipeError(f"Daytona did not take the worker's input: {exc}") from exc
        self.sent += 1

    def _follow(self) -> None:
        code: int | None = None
        try:
            asyncio.run(self.sandbox.process.get_session_command_logs_async(
                self.session_id, self.command_id, self.feed, self.feed_stderr))
            code = self._exit_code()
        except Exception as exc:  # noqa: BLE001 - reported through the stream's log
            if not self._stopped.is_set():
                self.feed_stderr(f"\n[rlm] the sandbox's log stream failed: {exc}\n")
        self.finish(code)

    def _exit_code(self) -> int | None:
        for _ in range(10):  # the daemon may record the exit code a moment after the output ends
            if self._stopped.is_set():
                return None
            try:
                code = self.sandbox.process.get_session_command(
                    self.session_id, self.command_id, request_timeout=10).exit_code
            except Exception:  # noqa: BLE001 - the sandbox may be gone: the watchdog tells
                return None
            if code is not None:
                return int(code)
            time.sleep(0.1)
        return None

    def _watch(self) -> None:
        assert self.health_interval
        while not self._stopped.wait(self.health_interval):
            if self.returncode() is not None:
                return
            problem = sandbox_problem(self.sandbox)
            if problem:
                self.feed_stderr(f"\n[rlm] {problem}\n")
                self.finish(-1)
                return

    def _stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(Exception):  # the sandbox may be gone already
            self.sandbox.process.delete_session(self.session_id, request_timeout=10)


def sandbox_problem(sandbox: Any) -> str | None:
    """Why ``sandbox`` cannot run the worker (deleted, stopped, in error), or None if it can."""
    daytona = sdk()
    try:
        sandbox.refresh_data()
    except daytona.DaytonaNotFoundError:
        return f"the Daytona sandbox {sandbox.id} no longer exists (it was deleted)"
    except Exception:  # noqa: BLE001 - a network blip is not a death: the stream tells
        return None
    state = getattr(sandbox.state, "value", sandbox.state)
    if state == "started":
        return None
    reason = getattr(sandbox, "error_reason", None)
    return (f"the Daytona sandbox {sandbox.id} is no longer running (state {state!r}"
            + (f": {reason}" if reason else "") + ")")


__all__ = ["SessionWorker", "sandbox_problem"]
