"""The channel to a worker ``exec``'d in a Modal sandbox: its stdin and stdout, as bytes.

Modal's exec API carries bytes both ways (``sandbox.exec(..., text=False)``: stdout is read in
chunks from the task command router, stdin is written with ``stdin.write(data)`` +
``stdin.drain()``, one ``TaskExecStdinWrite`` per drain), so the worker's binary framing is used
as is, without the ``--text`` base64 lines.

Nothing secret is put on a command line or in the exec's environment (both are visible in the
provider's dashboard and logs): the exec runs a short bootstrap (:data:`BOOT`) that reads, from
stdin, the worker's source and the per-run secret, writes the worker into the sandbox and
``execve``\\ s it with the secret in its own environment (which the worker removes at once).
The rest of stdin is then the channel.
"""

from __future__ import annotations

import threading
from typing import Any

from rlm_isolation.streams import ChunkStream

#: Run as ``python -I -S -c BOOT``. Reads ``"<worker bytes> <secret bytes> <dir>\n"``, then the
#: worker's source and the secret, exactly, with ``os.read`` (no buffering that could swallow
#: the channel's first frames), and becomes the worker.
BOOT = r"""
import os, sys
def need(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.stderr.write("rlm boot: stdin ended early\n"); os._exit(4)
        data += chunk
    return data
head = b""
while not head.endswith(b"\n"):
    c = os.read(0, 1)
    if not c:
        sys.stderr.write("rlm boot: no header\n"); os._exit(4)
    head += c
size, secret_size, base = head.decode("ascii").split(" ", 2)
worker, secret = need(int(size)), need(int(secret_size))
base = base.strip()
for d in (base, base + "/ctx", base + "/work"):
    os.makedirs(d, mode=0o700, exist_ok=True)
path = base + "/worker.py"
with open(path, "wb") as f:
    f.write(worker)
env = dict(os.environ, RLM_WORKER_SECRET=secret.decode("ascii"))
os.execve(sys.executable, [sys.executable, "-I", "-S", path, "--stdio"], env)
"""

JOIN_SECONDS = 5.0  # how long kill() waits for the output streams to end after terminating
WRITE_PIECE = 1 << 20  # bytes per TaskExecStdinWrite (the SDK buffers at most 16 MiB)


def boot_payload(worker_source: bytes, secret: bytes, base: str) -> bytes:
    """What :data:`BOOT` reads before the channel starts."""
    return f"{len(worker_source)} {len(secret)} {base}\n".encode("ascii") + worker_source + secret


class ModalProcess(ChunkStream):
    """``read`` / ``write`` / ``kill`` / ``returncode`` / ``stderr_tail`` over a Modal exec.

    Two threads follow the exec's stdout and stderr through the SDK's blocking iterators; the
    stdout chunks are handed to :meth:`read`. :meth:`kill` terminates the whole sandbox (the
    SDK has no call that kills one exec), once; a failure to terminate is kept in
    :attr:`terminate_error` for the environment to report.
    """

    def __init__(self, sandbox: Any, process: Any, *, what: str = "modal sandbox"):
        super().__init__(what=what)
        self.sandbox = sandbox
        self.process = process
        self._write_lock = threading.Lock()
        self.terminate_error: BaseException | None = None
        self._threads = [threading.Thread(target=self._follow_stdout, daemon=True,
                                          name="rlm-modal-stdout"),
                         threading.Thread(target=self._follow_stderr, daemon=True,
                                          name="rlm-modal-stderr")]
        for thread in self._threads:
            thread.start()

    # --- following the exec --------------------------------------------------------------------

    def _follow_stdout(self) -> None:
        try:
            for chunk in self.process.stdout:
                if chunk:
                    self._deliver([bytes(chunk)])
        except BaseException as exc:  # noqa: BLE001 - the stream broke: the worker is gone
            if not self.killed:
                self.tail.add(f"(reading the worker's output failed: {type(exc).__name__}: "
                              f"{exc})")
        code: int | None = None
        if not self.killed:
            try:
                code = self.process.wait()
            except BaseException:  # noqa: BLE001 - the sandbox may be gone with its exec
                code = None
        self.finish(code)

    def _follow_stderr(self) -> None:
        try:
            for chunk in self.process.stderr:
                self.tail.feed(bytes(chunk))
        except BaseException as exc:  # noqa: BLE001 - the stream ends with the worker
            self.tail.add(f"(the worker's stderr stream ended: {type(exc).__name__})")
        self.tail.close()

    # --- what the channel uses -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._ended:
            raise BrokenPipeError(f"the {self.what} worker has ended")
        view = memoryview(data)
        with self._write_lock:
            try:
                for start in range(0, len(view), WRITE_PIECE):
                    self.process.stdin.write(bytes(view[start:start + WRITE_PIECE]))
                    self.process.stdin.drain()
            except Exception as exc:
                # The SDK's own errors (a refused or failed TaskExecStdinWrite) are not OSError:
                # as a broken pipe the channel closes, the cell reports it with Modal's words
                # and a fresh sandbox takes over, instead of the raw exception leaving execute().
                raise BrokenPipeError(f"writing to the worker in the {self.what} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc

    def _stop(self) -> None:
        try:
            self.sandbox.terminate()
            # The output streams end with the sandbox: let the SDK's iterators finish before
            # the environment closes its client under them.
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(JOIN_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported by the environment
            self.terminate_error = exc
