"""The worker as an E2B background command, wired to a :class:`TextLineStream`.

E2B runs commands through envd's process service: output comes back as decoded text chunks, input
goes in with ``commands.send_stdin(pid, data)``. The worker is started with ``--text`` so every
channel frame is one ``@<base64>`` line each way; a thread follows the command's output stream
and feeds the host side until the command ends (or the sandbox goes away).
"""

from __future__ import annotations

import shlex
import threading
from typing import Any

from rlm_isolation.textstream import TextLineStream


def worker_command(python: str, worker_path: str, secret_path: str) -> str:
    """The shell command that starts the worker.

    The secret is handed over through a pipe that ``cat`` fills before the file is removed, so
    the per-run secret does not stay on the sandbox's disk.
    """
    return (f"exec {shlex.quote(python)} -I -S {shlex.quote(worker_path)} --stdio --text "
            f"--secret-file <(cat {shlex.quote(secret_path)} && rm -f {shlex.quote(secret_path)})")


def start_worker(sandbox: Any, command: str, *, what: str = "e2b sandbox") -> TextLineStream:
    """Start ``command`` in the background with stdin open; return the host end of its channel.

    ``kill()`` on the returned stream sends SIGKILL to the command (the sandbox itself is the
    environment's to delete).
    """
    handle = sandbox.commands.run(command, background=True, stdin=True, timeout=0,
                                  retain_output=False)
    pid = handle.pid
    state = {"killed": False}

    def send(line: str) -> None:
        try:
            sandbox.commands.send_stdin(pid, line)
        except Exception as exc:
            raise BrokenPipeError(f"sending to the worker in the {what} failed: {exc}") from exc

    def kill() -> None:
        state["killed"] = True
        try:
            sandbox.commands.kill(pid)
        except Exception:  # noqa: BLE001 - already gone, or the whole sandbox is
            pass

    stream = TextLineStream(send, kill, what=what)
    stream.pid = pid  # type: ignore[attr-defined]

    def follow() -> None:
        import e2b

        code: int | None = None
        try:
            result = handle.wait(on_stdout=stream.feed, on_stderr=stream.feed_stderr)
            code = result.exit_code
        except e2b.CommandExitException as exc:
            code = -9 if state["killed"] and exc.exit_code == -1 else exc.exit_code
        except Exception as exc:  # noqa: BLE001 - the stream broke: the sandbox may be gone
            if not state["killed"]:
                stream.feed_stderr(f"\n[e2b] the worker's output stream ended: "
                                   f"{type(exc).__name__}: {exc}\n")
        stream.finish(code)

    threading.Thread(target=follow, name=f"rlm-e2b-worker-{pid}", daemon=True).start()
    return stream
