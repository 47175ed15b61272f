"""A scripted Anthropic Messages API server for tests and benchmarks.

Standard library only, built on :class:`~rlm_testkit.servers.OpenAICompatibleServer` (same scripting,
faults, recording and prompt shutdown); only the wire format differs. It speaks enough of the
Messages API for the official ``anthropic`` SDK, LiteLLM's ``anthropic/...`` route and raw HTTP:

* ``POST /v1/messages``: a message, or server-sent events when the body says ``"stream": true``;
  like the real API it refuses a body without ``model``, ``max_tokens`` or ``messages``, a
  ``"system"`` role inside ``messages`` (the system prompt is the top-level ``system``), and,
  when the server has an ``api_key``, a request whose ``x-api-key`` (or bearer token) differs;
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``;
* ``GET /v1/models``, ``GET /``, ``GET /health``.

Errors have the Anthropic shape ``{"type": "error", "error": {"type", "message"}}`` with a
``request-id`` header; a ``Fault("status", status=529)`` is an ``overloaded_error``.

The responder is called as ``responder(messages, body)`` where ``messages`` is the chat in the
plain form every rlm responder takes: the top-level ``system`` first as a ``{"role": "system"}``
message, then each message with its text blocks joined into one string. So
:func:`~rlm_testkit.servers.demo_responder` and the responders written for the OpenAI server work here
unchanged. Token counts are the same deterministic characters / 4 as the OpenAI server's.

    from rlm_testkit.servers import AnthropicCompatibleServer, AnthropicReply, Fault

    with AnthropicCompatibleServer(replies=[AnthropicReply("hi", thinking="Let me think.")]) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key="test")
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rlm_backend_openai.emulator import (OpenAICompatibleServer, Reply,
                            _default_error_message, _Handler,
                            _ScriptExhausted, estimate_tokens)

__all__ = ["AnthropicCompatibleServer", "AnthropicReply"]

# error "type" of the Anthropic error body for a status
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass
class AnthropicReply(Reply):
    """A scripted reply with Anthropic extras.

    ``thinking`` puts a ``thinking`` block (and ``redacted_thinking=True`` a
    ``redacted_thinking`` block) before the text, as extended thinking does; ``text_blocks``
    splits the text over several text blocks. ``finish_reason`` takes OpenAI names (``stop``,
    ``length``) or Anthropic ones (``end_turn``, ``max_tokens``, ``stop_sequence``).
    """

    thinking: str | None = None
    redacted_thinking: bool = False
    text_blocks: int = 1


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type", "text") == "text" \
                    and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "".join(parts)
    return "" if content is None else str(content)


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request as plain chat messages: ``system`` first, text blocks joined."""
    out: list[dict[str, Any]] = []
    system = _block_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            out.append({"role": m.get("role"), "content": _block_text(m.get("content"))})
    return out


def _prompt_chars(body: dict[str, Any]) -> int:
    return sum(len(m["content"]) for m in chat_messages(body))


class _AnthropicHandler(_Handler):
    server_version = "rlm-testing-anthropic/1"

    def _send_error_json(self, status: int, message: str, type_: str | None = None,
                         code: str | None = None, extra: Any = None) -> None:
        del code
        etype = type_ or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        headers = {"request-id": f"req_rlm{int(time.time() * 1e6):x}", **(extra or {})}
        if status == 529:
            headers.setdefault("x-should-retry", "true")
        self._send_json(status, {"type": "error", "error": {"type": etype, "message": message}},
                        headers)

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/":
            self._send(200, b"rlm scripted Anthropic Messages API server (rlm_testkit.servers)\n",
                       "text/plain; charset=utf-8")
        elif path in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            model = {"type": "model", "id": owner.model, "display_name": owner.model,
                     "created_at": "2025-01-01T00:00:00Z"}
            self._send_json(200, {"data": [model], "has_more": False, "first_id": owner.model,
                                  "last_id": owner.model})
        else:
            self._send_error_json(404, f"Unknown path: GET {path}")

    def do_POST(self) -> None:
        raw = self._read_body()
        path = urlsplit(self.path).path.rstrip("/")
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            self._send_error_json(404, f"Unknown path: POST {path}")
            return
        owner: AnthropicCompatibleServer = self.server.owner  # type: ignore[assignment]
        if owner.api_key is not None:
            sent = self.headers.get("x-api-key") or ""
            auth = self.headers.get("authorization") or ""
            if sent != owner.api_key and auth != f"Bearer {owner.api_key}":
                self._send_error_json(401, "invalid x-api-key")
                return
        if not self.headers.get("anthropic-version"):
            self._send_error_json(400, "anthropic-version: header is required")
            return
        body = self._json_object(raw, "There was an error parsing the body")
        if body is None:
            return
        problem = _validate(body, count_only=path.endswith("count_tokens"))
        if problem:
            self._send_error_json(400, problem)
            return
        if path.endswith("count_tokens"):
            self._send_json(200, {"input_tokens": estimate_tokens(_prompt_chars(body))})
            return
        owner._chat(self, body, None, self.path)


def _validate(body: dict[str, Any], count_only: bool) -> str | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not count_only:
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            return "max_tokens: Field required"
        if max_tokens < 1:
            return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            return (f"messages.{i}.role: Input should be 'user' or 'assistant' (got {role!r}); "
                    "use the top-level `system` parameter for a system prompt")
        content = m.get("content")
        if not isinstance(content, (str, list)):
            return f"messages.{i}.content: Input should be a string or a list of content blocks"
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a string or a list of text blocks"
    return None


class AnthropicCompatibleServer(OpenAICompatibleServer):
    """A scripted Anthropic Messages API server on ``host:port`` (``port=0`` picks a free port).

    Same arguments, scripting (``replies``, ``responder``, ``add_replies``), faults
    (:class:`~rlm_testkit.servers.Fault`: ``status``, ``stall``, ``reset``, ``malformed``, ``no_usage``)
    and records (``requests``, ``headers``, ``paths``) as :class:`OpenAICompatibleServer`.
    ``api_key`` (optional) is the key the server accepts; without it any key is accepted.
    ``base_url`` is the server root, which is what Anthropic clients take.
    """

    handler_class = _AnthropicHandler
    _retry_after_header = "retry-after"
    _malformed_body = "<html>this is not JSON {\"content\": ["

    def _error_message(self, status: int) -> str:
        return _anthropic_error_message(status)

    def __init__(self, replies: Any = None, responder: Any = None, latency: float = 0.0, *,
                 model: str = "claude-scripted", api_key: str | None = None, **kwargs: Any):
        if kwargs.get("demo"):
            raise ValueError("demo=True is for the OpenAI-compatible demo server")
        super().__init__(replies, responder, latency, model=model, **kwargs)
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        """The Anthropic base URL: the server root (clients add ``/v1/messages``)."""
        return self.url

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<AnthropicCompatibleServer {self.base_url} {state} requests={len(self.requests)}>"

    def _chat(self, handler: Any, body: dict[str, Any], deployment: str | None, path: str) -> None:
        del deployment
        fault = self._take_request(handler, body, path)

        if self._answer_fault(handler, fault):
            return

        messages = chat_messages(body)
        try:
            reply = self._next(messages, body)
        except _ScriptExhausted as exc:
            handler._send_error_json(500, str(exc), "api_error")
            return
        except Exception as exc:  # noqa: BLE001 - a broken responder must fail the test loudly
            handler._send_error_json(500, f"rlm_testkit.servers responder raised {type(exc).__name__}: {exc}",
                                     "api_error")
            return

        if not self._hold_reply(handler, fault):
            return

        model = reply.model or body.get("model") or self.model
        content = _content_blocks(reply)
        usage: dict[str, Any] | None = None
        if reply.usage and not (fault is not None and fault.kind == "no_usage"):
            prompt = (reply.prompt_tokens if reply.prompt_tokens is not None
                      else estimate_tokens(_prompt_chars(body)))
            completion = (reply.completion_tokens if reply.completion_tokens is not None
                          else estimate_tokens(len(reply.text)))
            usage = {"input_tokens": prompt, "output_tokens": completion,
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        stop_reason = _STOP_REASONS.get(reply.finish_reason, reply.finish_reason)
        ident = f"msg_rlm{next(self._ids):020d}"
        if body.get("stream"):
            self._stream_message(handler, ident, model, content, stop_reason, usage)
            return
        obj: dict[str, Any] = {"id": ident, "type": "message", "role": "assistant", "model": model,
                               "content": content, "stop_reason": stop_reason,
                               "stop_sequence": None}
        if usage is not None:
            obj["usage"] = usage
        handler._send_json(200, obj, {"request-id": f"req_{ident[4:]}"})

    def _stream_message(self, handler: Any, ident: str, model: str,
                        content: list[dict[str, Any]], stop_reason: str,
                        usage: dict[str, Any] | None) -> None:
        start_usage = {"input_tokens": (usage or {}).get("input_tokens", 0), "output_tokens": 1}
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {
            "type": "message_start", "message": {
                "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}})]
        for index, block in enumerate(content):
            if block["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}}))
                text = block["text"]
                for i in range(0, len(text), 16):
                    events.append(("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text[i:i + 16]}}))
            elif block["type"] == "thinking":
                events.append(("content_block_start", {
                    "type": "content_block_start", "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}))
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]}}))
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": block}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        delta: dict[str, Any] = {"type": "message_delta",
                                 "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
        if usage is not None:
            delta["usage"] = {"output_tokens": usage["output_tokens"]}
        events.append(("message_delta", delta))
        events.append(("message_stop", {"type": "message_stop"}))
        head = handler._head(200, "text/event-stream; charset=utf-8", None, {"Cache-Control": "no-cache"})
        first = True
        for name, data in events:
            payload = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
            frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
            if first:
                frame, first = head + frame, False
            if not handler._write(frame):
                return
        handler._write(b"0\r\n\r\n")


def _content_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if isinstance(reply, AnthropicReply):
        if reply.thinking is not None:
            blocks.append({"type": "thinking", "thinking": reply.thinking,
                           "signature": "rlm-testing-signature"})
        if reply.redacted_thinking:
            blocks.append({"type": "redacted_thinking", "data": "cmxtLXRlc3Rpbmc="})
        pieces = max(1, int(reply.text_blocks))
    else:
        pieces = 1
    text = reply.text
    size = max(1, -(-len(text) // pieces)) if text else 1
    chunks = [text[i:i + size] for i in range(0, len(text), size)] or [""]
    blocks.extend({"type": "text", "text": chunk} for chunk in chunks)
    return blocks


def _anthropic_error_message(status: int) -> str:
    if status == 529:
        return "Overloaded (rlm_testkit.servers scripted fault)"
    if status == 401:
        return "invalid x-api-key (rlm_testkit.servers scripted fault)"
    return _default_error_message(status)
