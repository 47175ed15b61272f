"""A scripted OpenAI-compatible HTTP server for tests, benchmarks and the demo.

Standard library only. It speaks enough of the OpenAI chat-completions wire format for the
official SDK (and anything else OpenAI-compatible) to talk to it:

* ``POST /v1/chat/completions`` (also the Azure path
  ``/openai/deployments/{deployment}/chat/completions?api-version=...``), plain or streamed as
  server-sent events when the body says ``"stream": true``;
* ``GET /v1/models``, ``GET /`` and ``GET /health``; anything else is a 404 with an
  OpenAI-style error body.

Replies come from a script (``replies``, consumed in order, one per chat-completion request),
then from a ``responder`` callable. Faults (:class:`Fault`) are queued with :meth:`inject` and
hit the next chat-completion requests in FIFO order. Every chat-completion request body and its
headers are recorded in :attr:`OpenAICompatibleServer.requests` and ``.headers``.

The server is a ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, so one client
connection serves many requests and a slow reply never holds up the others. Every wait is
bounded and :meth:`OpenAICompatibleServer.stop` interrupts them, so stopping is prompt even with
stalled requests in flight.

    from rlm_testkit.servers import OpenAICompatibleServer, Reply, Fault

    with OpenAICompatibleServer(replies=["hello", Reply("bye", completion_tokens=3)]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="test")
        ...
"""

from __future__ import annotations

import itertools
import sys
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rlm_backend_support import content_chars, estimate_token_count

__all__ = ["Fault", "OpenAICompatibleServer", "Reply", "demo_responder", "estimate_tokens"]

DEMO_BANNER = "rlm demo server (not a real model)"
DEMO_FINGERPRINT = "rlm-demo-server (not a real model)"
FAULT_KINDS = ("status", "stall", "reset", "malformed", "no_usage")
MAX_STALL_SECONDS = 300.0  # a stall never sleeps longer than this, whatever it was asked
DEFAULT_STALL_SECONDS = 30.0
_IDLE_CONNECTION_TIMEOUT = 120.0  # an idle keep-alive connection is dropped after this

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# (type, code) of the OpenAI-style error body for a status.
_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    408: ("timeout_error", "timeout"),
    409: ("conflict_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


# One token estimate for the whole project: the server counts exactly what backends estimate.
estimate_tokens = estimate_token_count
_content_chars = content_chars


def _prompt_chars(messages: Iterable[Any]) -> int:
    return sum(_content_chars(m.get("content")) for m in messages if isinstance(m, dict))


@dataclass
class Reply:
    """One scripted reply.

    Token counts left as ``None`` are computed from the request (prompt) and from ``text``
    (completion) with :func:`estimate_tokens`. ``usage=False`` leaves the ``usage`` object out;
    ``cost`` adds ``usage.cost`` (USD, as OpenRouter reports it). ``model`` overrides the model
    named in the reply (by default the requested model, else the server's).
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage: bool = True
    cost: float | None = None
    model: str | None = None
    finish_reason: str = "stop"


@dataclass
class Fault:
    """One fault, queued with :meth:`OpenAICompatibleServer.inject` for the next request.

    ``kind`` is one of:

    * ``"status"``: answer with HTTP ``status`` (default 500) and an OpenAI-style error body
      ``{"error": {"message", "type", "code"}}``, plus ``Retry-After`` when ``retry_after`` is
      given. ``body`` replaces the message (a ``str``) or the whole JSON body (a ``dict``).
    * ``"stall"``: wait ``seconds`` (default 30, at most 300, cut short by ``stop()``), then
      answer normally.
    * ``"reset"``: close the connection abruptly (TCP RST) without answering.
    * ``"malformed"``: HTTP 200 with a body that is not JSON (``body`` if given as a ``str``).
    * ``"no_usage"``: a valid reply without the ``usage`` object.

    Faults that answer normally (``stall``, ``no_usage``) consume a scripted reply; the others do
    not.
    """

    kind: str
    status: int | None = None
    retry_after: float | str | None = None
    seconds: float | None = None
    body: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds are {', '.join(FAULT_KINDS)}")
        if self.kind == "status":
            if self.status is None:
                self.status = 500
            if not 100 <= int(self.status) <= 599:
                raise ValueError(f"fault status must be an HTTP status code, got {self.status!r}")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("fault seconds must be >= 0")


Responder = Callable[[list[dict[str, Any]], dict[str, Any]], "str | Reply"]


def demo_responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """A tiny stand-in "model" for the demo: enough to drive an RLM run end to end.

    When the conversation has a system prompt (a root RLM turn), the first turn looks at
    ``context`` in a ``repl`` block and the next turn sets the answer. Any other request (a plain
    sub-call) gets a short acknowledgement of the prompt. It does no reasoning at all.
    """
    del body
    has_system = any(isinstance(m, dict) and m.get("role") == "system" for m in messages)
    if not has_system:
        last = messages[-1] if messages else {}
        text = last.get("content") if isinstance(last, dict) else ""
        if not isinstance(text, str):
            text = str(text)
        preview = " ".join(text.split())[:60]
        return f"(demo reply to a {len(text)}-character prompt: {preview!r})"
    turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    if turns == 0:
        return ("I will look at the context first.\n"
                "```repl\n"
                "print(type(context).__name__, len(context))\n"
                "```")
    return ("The demo server does not reason; it reports the size of the context.\n"
            "```repl\n"
            "answer[\"content\"] = f\"demo answer: the context is a {type(context).__name__} "
            "of length {len(context)}\"\n"
            "answer[\"ready\"] = True\n"
            "```")


class _Headers(dict):
    """Recorded request headers: a plain dict with lower-case keys, looked up case-insensitively."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _ScriptExhausted(Exception):
    pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # many concurrent connects must not hit a tiny listen backlog
    owner: OpenAICompatibleServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.owner._stopping.is_set():
            return  # a client that resets or drops its connection is normal here (and in faults)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "rlm-testing/1"
    sys_version = ""
    timeout = _IDLE_CONNECTION_TIMEOUT
    server: _HTTPServer

    # -- plumbing -----------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        return  # quiet: tests and benchmarks do not want a line per request

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except OSError:  # the client went away (timed out, reset): nothing to answer
            self.close_connection = True
            return False

    def _head(self, status: int, content_type: str, length: int | None,
              extra: Mapping[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                 f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}",
                 f"Content-Type: {content_type}"]
        if length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {length}")
        if self.server.owner.demo:
            lines.append("X-RLM-Demo: not a real model")
        for name, value in (extra or {}).items():
            lines.append(f"{name}: {value}")
        lines.append("Connection: close" if self.close_connection else "Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              extra: Mapping[str, str] | None = None) -> None:
        # Head and body in one write: with Nagle plus delayed ACK, two small writes can stall 40 ms.
        self._write(self._head(status, content_type, len(body), extra) + body)

    def _send_json(self, status: int, obj: Any, extra: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), extra=extra)

    def _send_error_json(self, status: int, message: str, type_: str | None = None,
                         code: str | None = None, extra: Mapping[str, str] | None = None) -> None:
        default_type, default_code = _ERROR_KINDS.get(
            status, ("server_error", "server_error") if status >= 500 else ("invalid_request_error", None))
        self._send_json(status, {"error": {"message": message, "type": type_ or default_type,
                                           "param": None, "code": code or default_code}}, extra)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- routing --------------------------------------------------------------------------
    def _json_object(self, raw: bytes, parse_error: str) -> dict[str, Any] | None:
        """The request body as a JSON object; None after answering 400 when it is not one."""
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError) as exc:
            self._send_error_json(400, f"{parse_error}: {exc}")
            return None
        if not isinstance(body, dict):
            self._send_error_json(400, "The request body must be a JSON object.")
            return None
        return body

    def do_GET(self) -> None:  # stdlib naming
        owner = self.server.owner
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/":
            text = DEMO_BANNER if owner.demo else "rlm scripted OpenAI-compatible server (rlm_testkit.servers)"
            self._send(200, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8")
        elif path in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok", "demo": owner.demo})
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": owner.model, "object": "model", "created": owner._created,
                 "owned_by": "rlm-demo" if owner.demo else "rlm-testing"}]})
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
            if name == owner.model:
                self._send_json(200, {"id": name, "object": "model", "created": owner._created,
                                      "owned_by": "rlm-demo" if owner.demo else "rlm-testing"})
            else:
                self._send_error_json(404, f"The model {name!r} does not exist", code="model_not_found")
        else:
            self._send_error_json(404, f"Unknown path: GET {path}")

    def do_POST(self) -> None:
        raw = self._read_body()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        deployment = None
        if path in ("/v1/chat/completions", "/chat/completions"):
            pass
        elif path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            deployment = path[len("/openai/deployments/"):-len("/chat/completions")]
            if not deployment or "/" in deployment:
                self._send_error_json(404, f"Unknown path: POST {path}")
                return
            if "api-version" not in parse_qs(parts.query):
                self._send_error_json(404, "Resource not found: the api-version query parameter is "
                                           "missing", code="404")
                return
        else:
            self._send_error_json(404, f"Unknown path: POST {path}")
            return
        body = self._json_object(raw, "We could not parse the JSON body of your request")
        if body is None:
            return
        self.server.owner._chat(self, body, deployment, self.path)


class OpenAICompatibleServer:
    """A scripted OpenAI-compatible server on ``host:port`` (``port=0`` picks a free port).

    ``replies`` (``str`` or :class:`Reply`) are consumed in order, one per chat-completion request;
    then ``responder(messages, body)`` answers; with neither left, the server answers 500 and says
    the script ran out, so a test that makes one call too many fails loudly. ``latency`` seconds
    are waited before every chat-completion reply (concurrent requests wait in parallel; the
    ``status``, ``malformed`` and ``reset`` faults answer at once).
    ``demo=True`` marks every reply as coming from a demo server without touching its text (an
    ``X-RLM-Demo: not a real model`` header and ``system_fingerprint`` on every reply; ``GET /``
    says so) and, without replies or a responder, answers with :func:`demo_responder`.
    """

    handler_class: type[BaseHTTPRequestHandler] = _Handler  # servers of other wire formats subclass it

    def __init__(self, replies: Iterable[str | Reply] | None = None, responder: Responder | None = None,
                 latency: float = 0.0, model: str = "scripted-model", demo: bool = False,
                 host: str = "127.0.0.1", port: int = 0):
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.replies: list[str | Reply] = list(replies) if replies is not None else []
        self._responder = responder
        if demo and replies is None and responder is None:
            self._responder = demo_responder
        self.latency = float(latency)
        self.model = model
        self.demo = demo
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []  # request path (with query) of each recorded request
        self._lock = threading.Lock()
        self._next_reply = 0
        self._faults: deque[Fault] = deque()
        self._ids = itertools.count(1)
        self._created = int(time.time())
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> OpenAICompatibleServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), self.handler_class)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"rlm-openai-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving. Prompt even with stalled or slow requests in flight."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()  # wakes every latency / stall wait
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:  # unblock handler threads waiting on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    close = stop

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """The server root, ``http://host:port`` (what Azure clients take as ``azure_endpoint``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return f"{self.url}/v1"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<OpenAICompatibleServer {self.base_url} {state} requests={len(self.requests)}>"

    # -- scripting ------------------------------------------------------------------------
    @property
    def responder(self) -> Responder | None:
        """``responder(messages, body) -> str | Reply``, asked when the scripted replies are used up.
        May be replaced at any time (also as ``_responder``); read per request."""
        return self._responder

    @responder.setter
    def responder(self, value: Responder | None) -> None:
        self._responder = value

    def inject(self, fault: Fault) -> None:
        """Queue ``fault`` for the next chat-completion request (FIFO; several may be queued)."""
        if not isinstance(fault, Fault):
            raise TypeError(f"inject() takes a Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.append(fault)

    def add_replies(self, *replies: str | Reply) -> None:
        """Append replies to the script."""
        with self._lock:
            self.replies.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests and queued faults (the reply script is left as it is)."""
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self.paths.clear()
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def replies_left(self) -> int:
        with self._lock:
            return max(0, len(self.replies) - self._next_reply)

    # -- internals ------------------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(min(seconds, MAX_STALL_SECONDS))

    def _next(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> Reply:
        with self._lock:
            scripted = None
            if self._next_reply < len(self.replies):
                scripted = self.replies[self._next_reply]
                self._next_reply += 1
            used = self._next_reply
        if scripted is None:
            responder = self._responder
            if responder is None:
                raise _ScriptExhausted(
                    f"rlm_testkit.servers.OpenAICompatibleServer: the scripted replies ran out ({used} "
                    f"consumed, request #{len(self.requests)}) and no responder is set. Give the "
                    "server more replies or a responder.")
            scripted = responder(messages, body)
        if isinstance(scripted, str):
            return Reply(scripted)
        if isinstance(scripted, Reply):
            return scripted
        raise TypeError(f"a reply must be a str or a Reply, got {type(scripted).__name__}")

    # What the faults that replace a reply look like in this wire format (subclasses change them).
    _retry_after_header = "Retry-After"
    _malformed_body = "<html>this is not JSON {\"choices\": ["

    def _error_message(self, status: int) -> str:
        return _default_error_message(status)

    def _answer_fault(self, handler: _Handler, fault: Fault | None) -> bool:
        """Answer a ``reset``, ``status`` or ``malformed`` fault in place of the reply.

        Returns True when the request was answered (or its connection dropped) this way.
        """
        if fault is None:
            return False
        if fault.kind == "reset":
            handler.close_connection = True
            conn = handler.connection
            try:  # linger 0: close() sends RST instead of FIN
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            except OSError:
                pass
            return True
        if fault.kind == "status":
            status = int(fault.status or 500)
            extra = ({self._retry_after_header: _fmt_retry_after(fault.retry_after)}
                     if fault.retry_after is not None else None)
            if isinstance(fault.body, dict):
                handler._send_json(status, fault.body, extra)
            else:
                message = fault.body if isinstance(fault.body, str) else self._error_message(status)
                handler._send_error_json(status, message, extra=extra)
            return True
        if fault.kind == "malformed":
            text = fault.body if isinstance(fault.body, str) else self._malformed_body
            handler._send(200, text.encode("utf-8"), "application/json")
            return True
        return False

    def _take_request(self, handler: Any, body: dict[str, Any], path: str) -> Fault | None:
        """Record a request (body, headers, path) and take the next scripted fault, if any.
        Every server of this module (OpenAI, Anthropic, the Gemini emulator) calls it first."""
        with self._lock:
            self.requests.append(body)
            self.headers.append(_Headers(handler.headers.items()))
            self.paths.append(path)
            return self._faults.popleft() if self._faults else None

    def _hold_reply(self, handler: Any, fault: Fault | None) -> bool:
        """Wait out a scripted stall and the server's latency before a reply; False (and the
        connection closed) when the server is stopping meanwhile, and no reply is to be sent."""
        if fault is not None and fault.kind == "stall":
            self._wait(DEFAULT_STALL_SECONDS if fault.seconds is None else fault.seconds)
        self._wait(self.latency)
        if self._stopping.is_set():
            handler.close_connection = True
            return False
        return True

    def _chat(self, handler: _Handler, body: dict[str, Any], deployment: str | None, path: str) -> None:
        fault = self._take_request(handler, body, path)

        if self._answer_fault(handler, fault):
            return

        messages = body.get("messages")
        if not isinstance(messages, list):
            handler._send_error_json(400, "'messages' is a required property and must be an array.",
                                     code="missing_messages")
            return
        try:
            reply = self._next(messages, body)
        except _ScriptExhausted as exc:
            handler._send_error_json(500, str(exc), "server_error", "script_exhausted")
            return
        except Exception as exc:  # noqa: BLE001 - a broken responder must fail the test loudly
            handler._send_error_json(500, f"rlm_testkit.servers responder raised {type(exc).__name__}: {exc}",
                                     "server_error", "responder_error")
            return

        if not self._hold_reply(handler, fault):
            return

        text = reply.text
        model = reply.model or deployment or body.get("model") or self.model
        usage: dict[str, Any] | None = None
        if reply.usage and not (fault is not None and fault.kind == "no_usage"):
            prompt = (reply.prompt_tokens if reply.prompt_tokens is not None
                      else estimate_tokens(_prompt_chars(messages)))
            completion = (reply.completion_tokens if reply.completion_tokens is not None
                          else estimate_tokens(len(text)))
            usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}
            if reply.cost is not None:
                usage["cost"] = reply.cost
        ident = f"chatcmpl-rlm{next(self._ids):08d}"
        created = int(time.time())
        if body.get("stream"):
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            self._stream(handler, ident, created, model, text, reply.finish_reason,
                         usage if include_usage else None)
            return
        obj: dict[str, Any] = {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": reply.finish_reason}],
        }
        if self.demo:
            obj["system_fingerprint"] = DEMO_FINGERPRINT
        if usage is not None:
            obj["usage"] = usage
        handler._send_json(200, obj)

    def _stream(self, handler: _Handler, ident: str, created: int, model: str, text: str,
                finish_reason: str, usage: dict[str, Any] | None) -> None:
        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
            obj: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                   "model": model,
                                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]}
            obj.update(extra)
            return obj

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""}, None)]
        step = 16
        for i in range(0, len(text), step):
            events.append(chunk({"content": text[i:i + step]}, None))
        events.append(chunk({}, finish_reason))
        if usage is not None:
            events.append({"id": ident, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        payloads = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n".encode() for e in events]
        payloads.append(b"data: [DONE]\n\n")
        head = handler._head(200, "text/event-stream; charset=utf-8", None, {"Cache-Control": "no-cache"})
        first = True
        for data in payloads:
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            if first:
                frame, first = head + frame, False
            if not handler._write(frame):
                return
        handler._write(b"0\r\n\r\n")


def _fmt_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _default_error_message(status: int) -> str:
    if status == 401:
        return "Incorrect API key provided. (rlm_testkit.servers scripted fault)"
    if status == 429:
        return "Rate limit reached for requests. (rlm_testkit.servers scripted fault)"
    if status >= 500:
        return "The server had an error while processing your request. (rlm_testkit.servers scripted fault)"
    return f"Request failed with status {status}. (rlm_testkit.servers scripted fault)"
