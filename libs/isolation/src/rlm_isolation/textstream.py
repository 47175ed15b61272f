"""``TextLineStream``: the host end of a worker started with ``--text``.

Cloud sandboxes (E2B, Daytona, Modal) start processes through an API whose stdin and stdout carry
text, not bytes: output arrives as decoded strings in callbacks or iterators, input is sent as
strings. The worker's ``--text`` mode (:func:`rlm_isolation.worker.text_lines`) turns every frame
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

from .streams import LINE_CHARS, ChunkStream
from .worker import MAX_FRAME, ProtocolError, TEXT_MARK, _HEADER

MARK = TEXT_MARK.decode("ascii")  # the worker's own line mark, as text


class TextLineStream(ChunkStream):
    """``read(n)`` / ``write(data)`` over a line-oriented text transport.

    What the worker writes is untrusted (cell code can write to the channel's descriptor too):
    a channel line longer than the largest frame's is a protocol error, and only the first
    :data:`~rlm_isolation.streams.LINE_CHARS` characters of a foreign line are kept, so a line
    that never ends cannot grow a buffer without bound. A line's pieces are joined once, at its
    end, so a large frame delivered in small pieces costs linear time.

    Args:
        send: writes one string (a full line, newline included) to the worker's stdin.
        kill: stops the remote process (and whatever else the environment wants to release);
            called at most once, by :meth:`kill`.
        what: how errors name the worker ("daytona sandbox", ...).
        max_frame: the largest frame the channel accepts (the worker's ``MAX_FRAME``).
    """

    def __init__(self, send: Callable[[str], Any], kill: Callable[[], Any] | None = None, *,
                 what: str = "worker", max_frame: int = MAX_FRAME):
        super().__init__(what=what)
        self._send = send
        self._kill = kill
        self._send_lock = threading.Lock()
        #: the longest channel line: the mark, the base64 of the largest frame with its
        #: header, and room for a carriage return
        self.max_line = 1 + 4 * -(-(max_frame + _HEADER.size) // 3) + 2
        self._pieces: list[str] = []  # the current line, not yet ended
        self._size = 0
        self._kind: str | None = None  # "frame" (marked), "foreign", None: nothing but blanks yet
        self._skip = False  # the current line was over max_line: dropped up to its end

    # --- fed by the provider's output ------------------------------------------------------

    def feed(self, text: str | bytes) -> None:
        """Output of the worker's stdout, in pieces of any size."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        decoded: list[bytes | ProtocolError | None] = []
        pos = 0
        while (end := text.find("\n", pos)) >= 0:
            self._extend(text[pos:end], decoded)
            self._end_line(decoded)
            pos = end + 1
        self._extend(text[pos:], decoded)
        self._deliver(decoded)

    def _extend(self, piece: str, decoded: list[bytes | ProtocolError | None]) -> None:
        """Add ``piece`` to the current line, within the bounds of its kind."""
        if not piece or self._skip:
            return
        if self._kind is None:
            piece = piece.lstrip()
            if not piece:
                return  # blanks before the line's content: stripped anyway
            self._kind = "frame" if piece.startswith(MARK) else "foreign"
        if self._kind == "foreign":
            piece = piece[:max(LINE_CHARS - self._size, 0)]  # the tail keeps no more
            if not piece:
                return
        elif self._size + len(piece) > self.max_line:
            self._skip = True
            self._pieces, self._size = [], 0
            decoded.append(ProtocolError(
                f"the {self.what} worker wrote a channel line longer than {self.max_line} "
                "characters (the largest frame's)"))
            return
        self._pieces.append(piece)
        self._size += len(piece)

    def _end_line(self, decoded: list[bytes | ProtocolError | None]) -> None:
        line, kind, skip = "".join(self._pieces).strip(), self._kind, self._skip
        self._pieces, self._size, self._kind, self._skip = [], 0, None, False
        if skip or not line:
            return
        if kind != "frame":
            self.tail.add(line)
            return
        try:
            data = base64.b64decode(line[1:], validate=True)
            if data:
                decoded.append(data)
        except (binascii.Error, ValueError):
            decoded.append(None)  # read() raises: the channel cuts the worker off

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
