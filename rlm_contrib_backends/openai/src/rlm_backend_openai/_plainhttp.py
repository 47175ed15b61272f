"""A lean keep-alive HTTP/1.1 client on asyncio streams, for plain ``http://`` endpoints.

Local OpenAI-compatible servers (vLLM, llama.cpp, Ollama, the rlm test server) answer on the
loopback in a fraction of a millisecond, while the SDK over httpx's async stack spends about a
millisecond of client time per request on this machine (``benchmarks/bench_http_client.py``):
more than the server. Every ``llm_query`` and every root turn pays it. This module sends the
same request over a pooled asyncio connection in about a tenth of that.

It is deliberately small: one method (POST), a request body of known length, responses framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection, optional gzip or
deflate. No TLS, proxies or redirects: the backend uses it only for ``http://`` URLs with no
proxy configured and no custom HTTP client, and goes through the SDK for everything else.

A connection belongs to the event loop that opened it; :class:`PlainHTTPPool` is made per loop.
A request cancelled or failed midway closes its connection (a half-read response is never
reused). A reused idle connection that the server had already closed (EOF before any byte of the
status line) is retried once on a fresh connection, as browsers and httpx do.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from typing import NamedTuple

#: Idle connections kept per pool; more concurrent requests open more, then close the extras.
MAX_IDLE = 64
#: Longest status or header line, and most header lines, accepted from a server.
MAX_LINE = 64 * 1024
MAX_HEADERS = 200


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x this client can read."""


class StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


def request_head(method: str, target: str, host: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers, with ``Host`` and ``Content-Length``, as bytes.

    A ``Host`` among ``headers`` (any case) replaces ``host``; a ``Content-Length`` or
    ``Transfer-Encoding`` there is dropped: the body's framing is this client's, and a request
    never carries two of either header (servers answer 400, or worse, read two requests)."""
    lines = [f"{method} {target} HTTP/1.1", "", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break")
        lowered = name.lower()
        if lowered == "host":
            host = value
        elif lowered not in ("content-length", "transfer-encoding"):
            lines.append(f"{name}: {value}")
    lines[1] = f"Host: {host}"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError("a header line is too long") from None
    if len(line) > MAX_LINE:
        raise ProtocolError("a header line is too long")
    return line


async def read_response(reader: asyncio.StreamReader, *, fresh: bool) -> tuple[Response, bool]:
    """One response from ``reader``; returns it and whether the connection may be reused."""
    while True:
        try:
            status_line = await _line(reader)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and not fresh:
                raise StaleConnection() from None
            raise
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (
                parts[1].isascii() and parts[1].isdigit()):
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        version, status = parts[0], int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = await _line(reader)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ProtocolError("too many header lines")
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            continue
        break
    conn = headers.get("connection", "").lower()
    keep = ("keep-alive" in conn) if version == "HTTP/1.0" else ("close" not in conn)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        if length < 0:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
        body = await reader.readexactly(length)
    elif status in (204, 304):
        body = b""
    else:
        body = await reader.read()  # framed by the end of the connection
        keep = False
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "x-gzip"):
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    elif encoding not in ("identity", ""):
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")
    return Response(status, headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = (await _line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:20]!r}") from None
        if size < 0:
            raise ProtocolError(f"bad chunk size {size_line[:20]!r}")
        if size == 0:
            while (await _line(reader)) not in (b"\r\n", b"\n"):  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after each chunk


class PlainHTTPPool:
    """Keep-alive connections to one ``host:port`` on the running event loop."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.closed = False

    async def request(self, head: bytes, body: bytes) -> Response:
        """Send ``head + body``; the caller bounds the time (``asyncio.timeout``)."""
        while True:
            reused = bool(self._idle)
            if reused:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
            keep = False
            try:
                writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    writer.write(body)
                await writer.drain()
                response, keep = await read_response(reader, fresh=not reused)
                return response
            except StaleConnection:
                continue  # the server closed it while idle: try once more on a new connection
            finally:
                if keep and not self.closed and len(self._idle) < MAX_IDLE:
                    self._idle.append((reader, writer))
                else:
                    writer.close()

    def close(self) -> None:
        """Close the idle connections (call on the pool's loop, or after the loop stopped)."""
        self.closed = True
        idle, self._idle = self._idle, []
        for _, writer in idle:
            with contextlib.suppress(Exception):
                try:
                    writer.close()
                except RuntimeError:  # the loop is closed: its transport cannot close the socket
                    _shut(writer)


def _shut(writer: asyncio.StreamWriter) -> None:
    """End the connection under a transport whose loop is gone, so that the server sees it end
    now rather than when the garbage collector frees the socket."""
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
