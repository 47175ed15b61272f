"""``TextLineStream``: the host end of a worker started with ``--text``.

Cloud sandboxes (E2B, Daytona, Modal) start processes through an API whose stdin and stdout carry
text, not bytes: output arrives as decoded strings in callbacks or iterators, input is sent as
strings. The worker's ``--text`` mode (:func:`rlm.isolation.worker.text_lines`) turns every frame
into one line ``@<base64>\\n``; this class does the same on the host, so the channel's frames
cross such an API unchanged. Lines without the ``@`` mark (a shell's banner, output the provider
merged into stdout) go to the stderr tail that is quoted when the worker dies.

An environment feeds it from the provider's output callbacks and returns it from ``_launch``::

    stream = TextLineStream(send=lambda line: sandbox.send_stdin(pid, line), kill=terminate,
                            what="e2b sandbox")
    handle = sandbox.run(cmd, on_stdout=stream.feed, on_stderr=stream.feed_stderr)
    # ... when the process ends: stream.finish(exit_code)
    return stream
"""

from __future__ import annotations

import base64
import binascii
import collections
import threading
from collections.abc import Callable
from typing import Any

from .worker import ProtocolError

MARK = "@"


class TextLineStream:
    """``read(n)`` / ``write(data)`` over a line-oriented text transport.

    Args:
        send: writes one string (a full line, newline included) to the worker's stdin.
        kill: stops the remote process (and whatever else the environment wants to release);
            called at most once, by :meth:`kill`.
        what: how errors name the worker ("daytona sandbox", ...).
    """

    def __init__(self, send: Callable[[str], Any], kill: Callable[[], Any] | None = None, *,
                 what: str = "worker"):
        self._send = send
        self._kill = kill
        self.what = what
        self._partial = ""
        self._frames: collections.deque[bytes | None] = collections.deque()
        self._current = b""
        self._cond = threading.Condition()
        self._ended = False
        self._code: int | None = None
        self._err: collections.deque[str] = collections.deque(maxlen=200)
        self._err_partial = ""
        self._killed = False
        self._send_lock = threading.Lock()

    # --- fed by the provider's output ------------------------------------------------------

    def feed(self, text: str | bytes) -> None:
        """Output of the worker's stdout, in pieces of any size."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        decoded: list[bytes | None] = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if not line.startswith(MARK):
                self._err.append(line[:2000])
                continue
            try:
                data = base64.b64decode(line[1:], validate=True)
                if data:
                    decoded.append(data)
            except (binascii.Error, ValueError):
                decoded.append(None)  # read() raises: the channel cuts the worker off
        if decoded:
            with self._cond:
                self._frames.extend(decoded)
                self._cond.notify_all()

    def feed_stderr(self, text: str | bytes) -> None:
        """Output of the worker's stderr (kept, bounded, for error messages)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        lines = (self._err_partial + text).split("\n")
        self._err_partial = lines.pop()[-4000:]
        for line in lines:
            self._err.append(line[:2000])

    def finish(self, exit_code: int | None = None) -> None:
        """The remote process ended (or its output stream did): readers get end-of-stream."""
        with self._cond:
            if exit_code is not None:
                self._code = exit_code
            elif self._code is None:
                self._code = -1
            self._ended = True
            self._cond.notify_all()

    # --- what the channel uses ---------------------------------------------------------------

    def read(self, n: int) -> bytes:
        if not self._current:
            with self._cond:
                while not self._frames and not self._ended:
                    self._cond.wait()
                if not self._frames:
                    return b""
                frame = self._frames.popleft()
            if frame is None:
                raise ProtocolError(f"the {self.what} worker wrote a channel line that is not "
                                    "base64")
            self._current = frame
        data, self._current = self._current[:n], self._current[n:]
        return data

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._ended:
            raise BrokenPipeError(f"the {self.what} worker has ended")
        line = MARK + base64.b64encode(bytes(data)).decode("ascii") + "\n"
        with self._send_lock:
            self._send(line)

    def stderr_tail(self, lines: int = 20) -> str:
        tail = list(self._err)
        if self._err_partial:
            tail.append(self._err_partial)
        return "\n".join(tail[-lines:])

    def returncode(self) -> int | None:
        return self._code if self._ended else None

    def kill(self) -> None:
        with self._cond:
            if self._killed:
                return
            self._killed = True
        try:
            if self._kill is not None:
                self._kill()
        finally:
            with self._cond:
                if self._code is None:
                    self._code = -9
                self._ended = True
                self._cond.notify_all()


__all__ = ["MARK", "ProtocolError", "TextLineStream"]
