"""The lean plain-HTTP client (``_plainhttp``) against raw asyncio servers that frame their
answers every way HTTP/1.1 allows, close idle connections, stall or speak garbage; and when the
backend uses it at all (``http://`` only, no proxy, no custom client, not Azure)."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rlm.exceptions import BackendConnectionError, BackendTimeoutError
from rlm_backend_openai._plainhttp import (
    PlainHTTPPool,
    ProtocolError,
    read_response,
    request_head,
)
from rlm_backend_openai.client import OpenAIBackend

COMPLETION = json.dumps({"model": "m", "choices": [{"message": {"content": "hi"}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()


async def parse(raw: bytes, fresh: bool = True):
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_response(reader, fresh=fresh)


def run(coro):
    return asyncio.run(coro)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(1, 500), max_size=8))
def test_chunked_bodies_reassemble_whatever_the_chunk_sizes(body, cuts):
    chunks, rest = [], body
    for n in cuts:
        if rest:
            chunks.append(rest[:n])
            rest = rest[n:]
    if rest:
        chunks.append(rest)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: 1\r\n\r\n"
    response, keep = run(parse(raw))
    assert response.body == body and response.status == 200 and keep


def test_framing_by_length_by_close_and_http10():
    r, keep = run(parse(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcEXTRA"))
    assert (r.status, r.body, r.headers["x-a"], keep) == (201, b"abc", "b", True)
    r, keep = run(parse(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"))
    assert (r.body, keep) == (b"until the end", False)
    r, keep = run(parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"))
    assert keep is False
    r, keep = run(parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"))
    assert keep is False
    r, keep = run(parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert (r.status, r.body) == (200, b"ok")


def test_gzip_bodies_are_decompressed():
    data = gzip.compress(b'{"a": 1}')
    r, _ = run(parse(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(data), data)))
    assert r.body == b'{"a": 1}'


@pytest.mark.parametrize("raw", [b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n"])
def test_garbage_is_a_protocol_error(raw):
    with pytest.raises(ProtocolError):
        run(parse(raw))


def test_truncated_body_raises():
    with pytest.raises(asyncio.IncompleteReadError):
        run(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))


def test_header_injection_is_refused():
    with pytest.raises(ValueError, match="line break"):
        request_head("POST", "/", "h", {"X-A": "1\r\nEvil: 1"}, 0)


class RawServer:
    """An asyncio server whose handler is the test's; counts connections."""

    def __init__(self, handler):
        self.handler, self.connections = handler, 0

    async def __aenter__(self):
        async def on_conn(reader, writer):
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


def answer(body=COMPLETION, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_keep_alive_reuses_one_connection_and_retries_a_stale_one():
    async def main():
        async def one_then_close(reader, writer):  # answers one request, then closes
            await read_request(reader)
            writer.write(answer())
            await writer.drain()

        async with RawServer(one_then_close) as srv:
            pool = PlainHTTPPool("127.0.0.1", srv.port)
            head = request_head("POST", "/v1/chat/completions", "h", {}, 2)
            for _ in range(3):  # each reuse finds the connection closed, then reconnects
                assert (await pool.request(head, b"{}")).body == COMPLETION
                await asyncio.sleep(0.05)
            assert srv.connections == 3
            pool.close()

        async def keep_alive(reader, writer):
            while True:
                await read_request(reader)
                writer.write(answer())
                await writer.drain()

        async with RawServer(keep_alive) as srv:
            pool = PlainHTTPPool("127.0.0.1", srv.port)
            for _ in range(5):
                await pool.request(request_head("POST", "/", "h", {}, 2), b"{}")
            assert srv.connections == 1
            pool.close()

    run(main())


def test_a_cancelled_request_closes_its_connection():
    async def main():
        release = asyncio.Event()

        async def slow(reader, writer):
            while True:
                await read_request(reader)
                await release.wait()
                writer.write(answer())
                await writer.drain()

        async with RawServer(slow) as srv:
            pool = PlainHTTPPool("127.0.0.1", srv.port)
            head = request_head("POST", "/", "h", {}, 2)
            task = asyncio.ensure_future(pool.request(head, b"{}"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool._idle == []  # the half-used connection was not kept
            release.set()
            assert (await pool.request(head, b"{}")).body == COMPLETION
            assert srv.connections == 2
            pool.close()

    run(main())


def test_backend_maps_stall_reset_and_garbage_to_backend_errors():
    async def main():
        async def stall(reader, writer):
            await read_request(reader)
            await asyncio.sleep(5)

        async def garbage(reader, writer):
            await read_request(reader)
            writer.write(b"NOT HTTP\r\n\r\n")
            await writer.drain()

        async with RawServer(stall) as srv:
            b = OpenAIBackend(base_url=f"http://127.0.0.1:{srv.port}/v1", timeout=0.3, max_retries=0)
            assert b._plain_target == ("127.0.0.1", srv.port, "/v1/chat/completions")
            with pytest.raises(BackendTimeoutError, match="within the request timeout"):
                await b.acompletion("hi")
            b.close()
        async with RawServer(garbage) as srv:
            b = OpenAIBackend(base_url=f"http://127.0.0.1:{srv.port}/v1", max_retries=1,
                              retry_base_delay=0.001)
            with pytest.raises(BackendConnectionError, match="after 2 attempts.*ProtocolError"):
                await b.acompletion("hi")
            assert srv.connections == 2
            b.close()

    run(main())


def test_the_request_carries_key_organization_and_default_headers():
    async def main():
        seen = []

        async def record(reader, writer):
            head, body = await read_request(reader)
            seen.append((head, json.loads(body)))
            writer.write(answer())
            await writer.drain()

        async with RawServer(record) as srv:
            b = OpenAIBackend(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="sk-x",
                              organization="org-1", default_headers={"X-Trace": "t"})
            out = await b.acompletion([{"role": "user", "content": "q"}], temperature=0.5)
            b.close()
        head, body = seen[0]
        assert out.text == "hi" and out.usage.input_tokens == 1
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        for line in (b"Authorization: Bearer sk-x", b"OpenAI-Organization: org-1", b"X-Trace: t",
                     b"Host: 127.0.0.1:%d" % srv.port):
            assert line in head
        assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}],
                        "temperature": 0.5}

    run(main())


@pytest.mark.parametrize("kwargs, env", [
    ({"base_url": "https://api.example.com/v1", "api_key": "k"}, {}),
    ({"base_url": "http://127.0.0.1:1/v1", "default_query": {"a": "1"}}, {}),
    ({"base_url": "http://10.0.0.1:1/v1"}, {"HTTP_PROXY": "http://127.0.0.1:3128"}),
    ({"base_url": "http://127.0.0.1:1/v1"}, {"RLM_OPENAI_PLAIN_HTTP": "0"}),
])
def test_the_sdk_is_used_for_tls_proxies_custom_clients_and_when_disabled(kwargs, env, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert OpenAIBackend(**kwargs)._plain_target is None


def test_no_proxy_keeps_the_plain_path(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert OpenAIBackend(base_url="http://127.0.0.1:8000/v1")._plain_target == (
        "127.0.0.1", 8000, "/v1/chat/completions")


def test_default_headers_replace_the_clients_own_case_insensitively_as_the_sdk_does():
    """A user ``authorization`` / ``host`` / ``user-agent`` header replaces the client's own (as
    httpx's case-insensitive headers do on the SDK path): the configured key is then not sent
    as well, and the request never carries two Host or Content-Length headers."""
    async def main():
        seen = []

        async def record(reader, writer):
            head, _ = await read_request(reader)
            seen.append(head)
            writer.write(answer())
            await writer.drain()

        async with RawServer(record) as srv:
            b = OpenAIBackend(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="sk-SECRET",
                              default_headers={"authorization": "Bearer proxy-token",
                                               "host": "virtual.example", "user-agent": "me",
                                               "content-length": "1"})
            assert b._plain_target is not None
            assert (await b.acompletion("q")).text == "hi"
            b.close()
        lines = [line.lower() for line in seen[0].split(b"\r\n")]
        names = [line.split(b":", 1)[0] for line in lines if b":" in line]
        assert b"sk-secret" not in seen[0].lower()
        assert b"authorization: bearer proxy-token" in lines
        assert b"host: virtual.example" in lines and b"user-agent: me" in lines
        for name in (b"host", b"content-length", b"authorization", b"user-agent"):
            assert names.count(name) == 1, (name, seen[0])

    run(main())


def test_aclose_closes_the_plain_http_connections():
    """``await backend.aclose()`` closes the kept-alive plain-HTTP connection at once (the
    server sees the end of it), as ``close()`` does; nothing is left to the garbage collector."""
    async def main():
        closed = asyncio.Event()

        async def keep_alive(reader, writer):
            await read_request(reader)
            writer.write(answer())
            await writer.drain()
            if await reader.read() == b"":  # the client closed its end
                closed.set()

        async with RawServer(keep_alive) as srv:
            b = OpenAIBackend(base_url=f"http://127.0.0.1:{srv.port}/v1", max_retries=0)
            assert (await b.acompletion("q")).text == "hi"
            await asyncio.sleep(0.05)
            assert not closed.is_set()  # kept alive for the next request
            await b.aclose()
            await asyncio.wait_for(closed.wait(), 2)

    run(main())


@pytest.mark.parametrize("raw", [b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc",
                                 b"HTTP/1.1 \xb2 OK\r\nContent-Length: 0\r\n\r\n"])
def test_negative_lengths_and_non_ascii_digits_are_protocol_errors(raw):
    """Not a ValueError from deep inside asyncio, which the backend reports as an unknown error
    instead of a bad answer from the server ('²' is a digit to ``str.isdigit``)."""
    with pytest.raises(ProtocolError):
        run(parse(raw))


def test_close_after_the_loop_ended_still_closes_the_kept_connection():
    """``asyncio.run(backend.acompletion(...))`` then ``backend.close()`` (or a later call on a
    new loop, which drops the old loop's pool): the connection the finished loop kept alive is
    shut at once, not left open on the server until the garbage collector finds it."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    ended: list[bool] = []

    def serve_one_connection():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(answer())
            conn.settimeout(5)
            try:
                ended.append(conn.recv(1) == b"")
            except OSError:
                ended.append(False)

    server = threading.Thread(target=serve_one_connection, daemon=True)
    server.start()
    try:
        b = OpenAIBackend(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
                          max_retries=0)
        assert run(b.acompletion("q")).text == "hi"
        b.close()
        server.join(10)
        assert ended == [True]
    finally:
        listener.close()
