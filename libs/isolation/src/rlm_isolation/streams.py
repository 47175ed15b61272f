"""Building blocks for the host end of a worker reached through a provider's SDK.

When a worker's output arrives from callbacks or iterators (another thread) instead of a pipe
the channel can read, the environment's process object hands it over here:

* :class:`StderrTail`: the worker's diagnostic output, fed in pieces of any size, kept bounded
  (the last lines, each cut to a length), quoted when the worker dies;
* :class:`ChunkStream`: the channel's ``read(n)`` over chunks other threads deliver, end of
  stream with an exit code, ``returncode()``, ``stderr_tail()`` and a ``kill()`` that stops the
  remote process once. Subclasses provide ``write`` and :meth:`ChunkStream._stop`.

:class:`~rlm_isolation.textstream.TextLineStream` (text-only exec APIs) and the Modal
environment's binary exec stream are built on them.
"""

from __future__ import annotations

import collections
import threading

from .worker import ProtocolError

LINE_CHARS = 2000  # a kept line is cut to this many characters
PARTIAL_CHARS = 4000  # an unfinished line is kept up to this many (its end)


class StderrTail:
    """The last ``maxlen`` lines of a stream of text, fed in pieces of any size."""

    def __init__(self, maxlen: int = 200):
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._partial = ""
        self._lock = threading.Lock()

    def feed(self, data: str | bytes) -> None:
        """A piece of output (``bytes`` are decoded as UTF-8, errors replaced)."""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        with self._lock:
            lines = (self._partial + data).split("\n")
            self._partial = lines.pop()[-PARTIAL_CHARS:]
            self._lines.extend(line[:LINE_CHARS] for line in lines)

    def add(self, line: str) -> None:
        """One whole line (a note of the host's, or a line the caller already split off)."""
        with self._lock:
            self._lines.append(line[:LINE_CHARS])

    def close(self) -> None:
        """The stream ended: an unfinished last line counts as a line."""
        with self._lock:
            if self._partial:
                self._lines.append(self._partial[:LINE_CHARS])
                self._partial = ""

    def text(self, lines: int = 20) -> str:
        """The last ``lines`` lines (an unfinished one included), joined by newlines."""
        with self._lock:
            tail = list(self._lines)
            if self._partial:
                tail.append(self._partial)
        return "\n".join(tail[-lines:])


class ChunkStream:
    """``read(n)`` over chunks delivered by other threads, and the worker's end.

    Feeders call :meth:`_deliver` (a ``None`` chunk stands for a line that could not be decoded,
    a :class:`ProtocolError` for another breach: :meth:`read` raises there, and the channel cuts
    the worker off) and
    :meth:`finish` when the remote process ends. :meth:`kill` calls :meth:`_stop` once.

    Args:
        what: how errors name the worker ("e2b sandbox i123...").
    """

    def __init__(self, *, what: str = "worker"):
        self.what = what
        self.tail = StderrTail()
        self._chunks: collections.deque[bytes | ProtocolError | None] = collections.deque()
        self._current = b""
        self._cond = threading.Condition()
        self._ended = False
        self._code: int | None = None
        self._killed = False

    # --- fed by the subclass ---------------------------------------------------------------

    def _deliver(self, chunks: list[bytes | ProtocolError | None]) -> None:
        chunks = [chunk for chunk in chunks if chunk is None or chunk]  # b"" would read as EOF
        if chunks:
            with self._cond:
                self._chunks.extend(chunks)
                self._cond.notify_all()

    def finish(self, exit_code: int | None = None) -> None:
        """The remote process ended (or its output stream did): readers get end-of-stream.

        ``None`` means the code is unknown: -1, unless one was recorded already."""
        with self._cond:
            if exit_code is not None:
                self._code = exit_code
            elif self._code is None:
                self._code = -1
            self._ended = True
            self._cond.notify_all()

    def _stop(self) -> None:
        """Stop the remote process (and release what goes with it); called once, by kill()."""

    # --- what the channel uses ---------------------------------------------------------------

    def read(self, n: int) -> bytes:
        if not self._current:
            with self._cond:
                while not self._chunks and not self._ended:
                    self._cond.wait()
                if not self._chunks:
                    return b""
                chunk = self._chunks.popleft()
            if chunk is None:
                raise ProtocolError(f"the {self.what} worker wrote a channel line that is not "
                                    "base64")
            if isinstance(chunk, ProtocolError):
                raise chunk
            self._current = chunk
        data, self._current = self._current[:n], self._current[n:]
        return data

    def stderr_tail(self, lines: int = 20) -> str:
        return self.tail.text(lines)

    def returncode(self) -> int | None:
        with self._cond:
            return self._code if self._ended else None

    @property
    def killed(self) -> bool:
        """Whether :meth:`kill` was called."""
        return self._killed

    def kill(self) -> None:
        with self._cond:
            if self._killed:
                return
            self._killed = True
            # Readers see the end now, not when the provider's stop request returns: that
            # request can hang as long as its HTTP timeout (an unreachable provider), and a
            # handshake bounded by ``startup_timeout`` waits in read().
            if self._code is None:
                self._code = -9
            self._ended = True
            self._cond.notify_all()
        self._stop()


__all__ = ["ChunkStream", "StderrTail"]
