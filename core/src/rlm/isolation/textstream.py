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
import threading
from collections.abc import Callable
from typing import Any

from .streams import ChunkStream
from .worker import ProtocolError

MARK = "@"


class TextLineStream(ChunkStream):
    """``read(n)`` / ``write(data)`` over a line-oriented text transport.

    Args:
        send: writes one string (a full line, newline included) to the worker's stdin.
        kill: stops the remote process (and whatever else the environment wants to release);
            called at most once, by :meth:`kill`.
        what: how errors name the worker ("daytona sandbox", ...).
    """

    def __init__(self, send: Callable[[str], Any], kill: Callable[[], Any] | None = None, *,
                 what: str = "worker"):
        super().__init__(what=what)
        self._send = send
        self._kill = kill
        self._partial = ""
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
                self.tail.add(line)
                continue
            try:
                data = base64.b64decode(line[1:], validate=True)
                if data:
                    decoded.append(data)
            except (binascii.Error, ValueError):
                decoded.append(None)  # read() raises: the channel cuts the worker off
        self._deliver(decoded)

    def feed_stderr(self, text: str | bytes) -> None:
        """Output of the worker's stderr (kept, bounded, for error messages)."""
        self.tail.feed(text)

    def _stop(self) -> None:
        if self._kill is not None:
            self._kill()

    # --- what the channel uses ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._ended:
            raise BrokenPipeError(f"the {self.what} worker has ended")
        line = MARK + base64.b64encode(bytes(data)).decode("ascii") + "\n"
        with self._send_lock:
            self._send(line)


__all__ = ["MARK", "ProtocolError", "TextLineStream"]
