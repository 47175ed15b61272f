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

import collections
import threading
from typing import Any

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


class ModalProcess:
    """``read`` / ``write`` / ``kill`` / ``returncode`` / ``stderr_tail`` over a Modal exec.

    Two threads follow the exec's stdout and stderr through the SDK's blocking iterators; the
    stdout chunks are handed to :meth:`read`. :meth:`kill` terminates the whole sandbox (the
    SDK has no call that kills one exec), once; ``on_kill`` runs after that (the environment
    forgets the sandbox there).
    """

    def __init__(self, sandbox: Any, process: Any, *, what: str = "modal sandbox"):
        self.sandbox = sandbox
        self.process = process
        self.what = what
        self._chunks: collections.deque[bytes] = collections.deque()
        self._current = b""
        self._cond = threading.Condition()
        self._ended = False
        self._code: int | None = None
        self._killed = False
        self._write_lock = threading.Lock()
        self._err: collections.deque[str] = collections.deque(maxlen=200)
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
                    with self._cond:
                        self._chunks.append(bytes(chunk))
                        self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - the stream broke: the worker is gone
            if not self._killed:
                self._err.append(f"(reading the worker's output failed: {type(exc).__name__}: "
                                 f"{exc})")
        code: int | None = None
        if not self._killed:
            try:
                code = self.process.wait()
            except BaseException:  # noqa: BLE001 - the sandbox may be gone with its exec
                code = None
        with self._cond:
            if self._code is None:
                self._code = code if code is not None else -1
            self._ended = True
            self._cond.notify_all()

    def _follow_stderr(self) -> None:
        partial = b""
        try:
            for chunk in self.process.stderr:
                lines = (partial + bytes(chunk)).split(b"\n")
                partial = lines.pop()[-4000:]
                for line in lines:
                    self._err.append(line.decode("utf-8", "replace")[:2000])
        except BaseException as exc:  # noqa: BLE001 - the stream ends with the worker
            self._err.append(f"(the worker's stderr stream ended: {type(exc).__name__})")
        if partial:
            self._err.append(partial.decode("utf-8", "replace")[:2000])

    # --- what the channel uses -----------------------------------------------------------------

    def read(self, n: int) -> bytes:
        if not self._current:
            with self._cond:
                while not self._chunks and not self._ended:
                    self._cond.wait()
                if not self._chunks:
                    return b""
                self._current = self._chunks.popleft()
        data, self._current = self._current[:n], self._current[n:]
        return data

    def write(self, data: bytes) -> None:
        if self._ended:
            raise BrokenPipeError(f"the {self.what} worker has ended")
        view = memoryview(data)
        with self._write_lock:
            for start in range(0, len(view), WRITE_PIECE):
                self.process.stdin.write(bytes(view[start:start + WRITE_PIECE]))
                self.process.stdin.drain()

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._err)[-lines:])

    def returncode(self) -> int | None:
        with self._cond:
            return self._code if self._ended else None

    @property
    def killed(self) -> bool:
        """Whether :meth:`kill` was called (the sandbox was terminated, or tried to be)."""
        return self._killed

    def kill(self) -> None:
        with self._cond:
            if self._killed:
                return
            self._killed = True
        try:
            self.sandbox.terminate()
            # The output streams end with the sandbox: let the SDK's iterators finish before
            # the environment closes its client under them.
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(JOIN_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported by the environment
            self.terminate_error = exc
        finally:
            with self._cond:
                if self._code is None:
                    self._code = -9
                self._ended = True
                self._cond.notify_all()
