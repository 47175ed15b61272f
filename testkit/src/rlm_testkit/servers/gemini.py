"""An emulator of the Gemini API (Google AI ``generativelanguage`` REST) for tests and benchmarks.

An *emulator*: not Google's service and no model. It answers in the public API's JSON shapes so
the official ``google-genai`` SDK (``genai.Client(http_options={"base_url": emu.base_url})``)
and raw HTTP clients work against it unchanged. Standard library only, built on
:class:`~rlm_testkit.servers.OpenAICompatibleServer` (same scripting, faults, recording and prompt
shutdown); only the wire format differs.

* ``POST /{version}/models/{model}:generateContent``: a ``GenerateContentResponse``
  (``candidates[].content.parts[]``, ``finishReason``, ``usageMetadata`` with
  ``promptTokenCount`` / ``candidatesTokenCount`` / ``thoughtsTokenCount`` / ``totalTokenCount``,
  ``modelVersion``, ``responseId``). Like the API, zero counts are left out (proto3 JSON).
* ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``: the same as server-sent
  events, text in pieces, ``finishReason`` and ``usageMetadata`` on the last event.
* ``POST /{version}/models/{model}:countTokens``: ``{"totalTokens": n, ...}`` for ``contents``
  or a ``generateContentRequest``.
* ``GET /{version}/models`` and ``/{version}/models/{model}``: the model with its token limits.

``{version}`` is ``v1beta``, ``v1`` or ``v1alpha``. Like the API, the emulator refuses unknown
fields (``Unknown name "x" at 'generation_config'``), roles other than ``user`` / ``model`` in
``contents`` (the system prompt is ``systemInstruction``) and empty ``contents``. With an
``api_key`` it checks ``x-goog-api-key`` (or ``?key=``): none is a 403 ``PERMISSION_DENIED``, a
wrong one a 400 ``INVALID_ARGUMENT`` whose ``ErrorInfo`` reason is ``API_KEY_INVALID``, as the
API answers. Errors have the Google shape ``{"error": {"code", "message", "status",
"details"}}``; a 429 fault with ``retry_after`` carries a ``google.rpc.RetryInfo`` detail
(``"retryDelay": "2s"``), which is how the API says when to come back (it sends no
``Retry-After`` header).

The responder is called as ``responder(messages, body)`` with the request as plain chat messages
(``systemInstruction`` first as a ``system`` message, role ``model`` as ``assistant``, the text
parts of each content joined), so the responders written for the OpenAI server work unchanged.
Token counts are the same characters / 4 as the other test servers'.

    from rlm_testkit.servers import Fault, GeminiEmulator, GeminiReply

    with GeminiEmulator(replies=[GeminiReply("hi", thoughts="Let me think.")]) as emu:
        client = genai.Client(api_key="test", http_options={"base_url": emu.base_url})
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rlm_backend_openai.emulator import (Fault, OpenAICompatibleServer, Reply,
                            _Handler, _ScriptExhausted, estimate_tokens)

__all__ = ["GeminiEmulator", "GeminiReply", "gemini_error_body"]

API_VERSIONS = ("v1beta", "v1", "v1alpha")
# google.rpc.Code names of the HTTP statuses the API answers with.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY",
                   "tool_calls": "STOP"}
_REQUEST_FIELDS = {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
                   "generationConfig", "cachedContent", "model", "labels"}
_GENERATION_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "_responseJsonSchema", "responseModalities", "candidateCount", "maxOutputTokens",
    "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "mediaResolution", "imageConfig",
}
INPUT_TOKEN_LIMIT = 1_048_576
OUTPUT_TOKEN_LIMIT = 65_536


@dataclass
class GeminiReply(Reply):
    """A scripted reply with Gemini extras.

    ``thoughts`` puts a thought part (``"thought": true``) before the answer, as thinking
    models do with ``includeThoughts``; ``thoughts_tokens`` is its ``thoughtsTokenCount``
    (default: characters / 4 of ``thoughts``, else none). ``cached_tokens`` reports
    ``cachedContentTokenCount``. ``block_reason`` (e.g. ``"SAFETY"``) answers like a blocked
    prompt: ``promptFeedback.blockReason`` and no candidates. ``finish_reason`` takes OpenAI names
    (``stop``, ``length``) or Gemini ones (``STOP``, ``MAX_TOKENS``, ``SAFETY``, ...).
    ``text_parts`` splits the answer over several text parts.
    """

    thoughts: str | None = None
    thoughts_tokens: int | None = None
    cached_tokens: int = 0
    block_reason: str | None = None
    text_parts: int = 1


def gemini_error_body(code: int, message: str, status: str | None = None,
                      details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An error body in the API's shape: ``{"error": {"code", "message", "status", "details"}}``."""
    error: dict[str, Any] = {"code": code, "message": message,
                             "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def _parts_text(content: Any) -> str:
    """The text of a ``Content``'s non-thought parts, joined."""
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts
                   if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request as plain chat messages: ``systemInstruction`` first, ``model`` as ``assistant``."""
    out: list[dict[str, Any]] = []
    system = _parts_text(body.get("systemInstruction"))
    if system:
        out.append({"role": "system", "content": system})
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            role = "assistant" if content.get("role") == "model" else "user"
            out.append({"role": role, "content": _parts_text(content)})
    return out


def _prompt_chars(body: dict[str, Any]) -> int:
    return sum(len(m["content"]) for m in chat_messages(body))


def _camel(name: str) -> str:
    """proto3 JSON parsers take a field's lowerCamel name or its original snake_case name."""
    if name.startswith("_"):
        return name
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _validate(body: dict[str, Any]) -> str | None:
    """The API's 400 message for a request it would refuse, else None."""
    for key in body:
        if _camel(key) not in _REQUEST_FIELDS:
            return f"Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
    config = body.get("generationConfig")
    if config is not None:
        if not isinstance(config, dict):
            return "Invalid JSON payload received. 'generation_config' must be an object."
        for key in config:
            if _camel(key) not in _GENERATION_FIELDS:
                return (f"Invalid JSON payload received. Unknown name \"{key}\" at "
                        "'generation_config': Cannot find field.")
        count = config.get("maxOutputTokens")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            return "max_output_tokens must be a positive integer."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            return f"* GenerateContentRequest.contents[{i}]: must be an object"
        role = content.get("role")
        if role not in (None, "", "user", "model", "function"):
            return "Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
    return None


def _nonzero(**counts: int) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if v}


class _GeminiHandler(_Handler):
    server_version = "rlm-testing-gemini-emulator/1"

    def _send_error_json(self, status: int, message: str, type_: str | None = None,
                         code: str | None = None, extra: Any = None) -> None:
        del code
        self._send_json(status, gemini_error_body(status, message, type_), extra)

    def _route(self) -> tuple[str, str | None, str | None]:
        """``(version, model, method)`` of ``/{version}/models[/{model}[:{method}]]``."""
        path = unquote(urlsplit(self.path).path).strip("/")
        pieces = path.split("/", 2)
        if len(pieces) < 2 or pieces[0] not in API_VERSIONS or pieces[1] != "models":
            return "", None, None
        if len(pieces) == 2:
            return pieces[0], "", None
        model, _, method = pieces[2].partition(":")
        return pieces[0], model, method or None

    def do_GET(self) -> None:
        owner: GeminiEmulator = self.server.owner  # type: ignore[assignment]
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/":
            self._send(200, b"rlm Gemini API emulator (rlm_testkit.servers; not Google's service, no model)\n",
                       "text/plain; charset=utf-8")
            return
        if path == "/health":
            self._send_json(200, {"status": "ok", "emulator": True})
            return
        version, model, method = self._route()
        if not version or method is not None:
            self._send_error_json(404, f"Unknown path: GET {path}")
            return
        if not self._authorized():
            return
        if model == "":
            self._send_json(200, {"models": [owner.model_info()]})
        elif model is not None and model.removeprefix("models/") == owner.model:
            self._send_json(200, owner.model_info())
        else:
            self._send_error_json(404, f"models/{model} is not found for API version {version}, or "
                                       "is not supported for generateContent. Call ListModels to see "
                                       "the list of available models and their supported methods.")

    def do_POST(self) -> None:
        raw = self._read_body()
        version, model, method = self._route()
        path = urlsplit(self.path).path
        if not version or not model or method not in ("generateContent", "streamGenerateContent",
                                                      "countTokens"):
            self._send_error_json(404, f"Unknown path: POST {path}")
            return
        if not self._authorized():
            return
        body = self._json_object(raw, "Invalid JSON payload received")
        if body is None:
            return
        owner: GeminiEmulator = self.server.owner  # type: ignore[assignment]
        if method == "countTokens":
            request = body.get("generateContentRequest", body)
            if not isinstance(request, dict):
                self._send_error_json(400, "generateContentRequest must be an object")
                return
            problem = _validate({k: v for k, v in request.items() if k != "model"})
            if problem:
                self._send_error_json(400, problem)
                return
            with owner._lock:
                owner.count_requests.append(body)
            total = estimate_tokens(_prompt_chars(request))
            self._send_json(200, {"totalTokens": total,
                                  "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})
            return
        problem = _validate(body)
        if problem:
            self._send_error_json(400, problem)
            return
        stream = method == "streamGenerateContent"
        if stream and parse_qs(urlsplit(self.path).query).get("alt") != ["sse"]:
            self._send_error_json(400, "this emulator streams server-sent events only: add ?alt=sse")
            return
        owner._generate(self, {**body, "model": model}, stream, self.path)

    def _authorized(self) -> bool:
        owner: GeminiEmulator = self.server.owner  # type: ignore[assignment]
        if owner.api_key is None:
            return True
        sent = self.headers.get("x-goog-api-key") or (parse_qs(urlsplit(self.path).query).get("key")
                                                     or [""])[0]
        if not sent:
            self._send_error_json(403, "Method doesn't allow unregistered callers (callers without "
                                       "established identity). Please use API Key or other form of "
                                       "API consumer identity to call this API.")
            return False
        if sent != owner.api_key:
            self._send_json(400, gemini_error_body(400, "API key not valid. Please pass a valid API key.",
                                                   details=[_api_key_invalid()]))
            return False
        return True


def _api_key_invalid() -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}}


class GeminiEmulator(OpenAICompatibleServer):
    """An emulator of the Gemini API on ``host:port`` (``port=0`` picks a free port).

    Same arguments, scripting (``replies``, ``responder``, ``add_replies``), faults
    (:class:`~rlm_testkit.servers.Fault`: ``status``, ``stall``, ``reset``, ``malformed``, ``no_usage``)
    and records (``requests``, ``headers``, ``paths``) as :class:`OpenAICompatibleServer`;
    ``requests`` holds the ``generateContent`` bodies (with the path's model as ``"model"``),
    ``count_requests`` the ``countTokens`` bodies. ``api_key`` (optional) is the key it accepts.
    ``base_url`` is the server root, which is what ``HttpOptions(base_url=...)`` takes.
    """

    handler_class = _GeminiHandler
    _malformed_body = "<html>this is not JSON {\"candidates\": ["

    def __init__(self, replies: Any = None, responder: Any = None, latency: float = 0.0, *,
                 model: str = "gemini-emulated", api_key: str | None = None, **kwargs: Any):
        if kwargs.get("demo"):
            raise ValueError("demo=True is for the OpenAI-compatible demo server")
        super().__init__(replies, responder, latency, model=model, **kwargs)
        self.api_key = api_key
        self.count_requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        """The server root (the SDK adds ``/v1beta/models/...``)."""
        return self.url

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<GeminiEmulator {self.base_url} {state} requests={len(self.requests)}>"

    def model_info(self) -> dict[str, Any]:
        return {"name": f"models/{self.model}", "version": "001", "displayName": self.model,
                "description": "rlm_testkit.servers Gemini API emulator (no model)",
                "inputTokenLimit": INPUT_TOKEN_LIMIT, "outputTokenLimit": OUTPUT_TOKEN_LIMIT,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "temperature": 1.0, "maxTemperature": 2.0, "topP": 0.95, "topK": 64,
                "thinking": True}

    def _error_message(self, status: int) -> str:
        return _MESSAGES.get(status, f"Request failed with status {status}. (rlm_testkit.servers emulator fault)")

    def _answer_fault(self, handler: Any, fault: Fault | None) -> bool:
        # The API says when to retry in a RetryInfo detail, not in a Retry-After header.
        if (fault is not None and fault.kind == "status" and fault.retry_after is not None
                and not isinstance(fault.body, dict)):
            status = int(fault.status or 500)
            delay = fault.retry_after if isinstance(fault.retry_after, str) else f"{float(fault.retry_after):g}s"
            message = fault.body if isinstance(fault.body, str) else self._error_message(status)
            handler._send_json(status, gemini_error_body(status, message, details=[
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]))
            return True
        return super()._answer_fault(handler, fault)

    def _generate(self, handler: Any, body: dict[str, Any], stream: bool, path: str) -> None:
        fault = self._take_request(handler, body, path)

        if self._answer_fault(handler, fault):
            return
        messages = chat_messages(body)
        try:
            reply = self._next(messages, body)
        except _ScriptExhausted as exc:
            handler._send_error_json(500, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a broken responder must fail the test loudly
            handler._send_error_json(500, f"rlm_testkit.servers responder raised {type(exc).__name__}: {exc}")
            return

        if not self._hold_reply(handler, fault):
            return

        g = reply if isinstance(reply, GeminiReply) else GeminiReply(**vars(reply))
        model = g.model or body.get("model") or self.model
        response_id = f"rlm{next(self._ids):012d}"
        usage: dict[str, Any] | None = None
        if g.usage and not (fault is not None and fault.kind == "no_usage"):
            prompt = g.prompt_tokens if g.prompt_tokens is not None else estimate_tokens(_prompt_chars(body))
            output = g.completion_tokens if g.completion_tokens is not None else estimate_tokens(len(g.text))
            thoughts = (g.thoughts_tokens if g.thoughts_tokens is not None
                        else estimate_tokens(len(g.thoughts)) if g.thoughts else 0)
            usage = _nonzero(promptTokenCount=prompt, candidatesTokenCount=output,
                             totalTokenCount=prompt + output + thoughts,
                             thoughtsTokenCount=thoughts, cachedContentTokenCount=g.cached_tokens)
            if prompt:
                usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if g.block_reason:
            obj: dict[str, Any] = {"promptFeedback": {"blockReason": g.block_reason},
                                   "modelVersion": model, "responseId": response_id}
            if usage is not None:
                obj["usageMetadata"] = {k: v for k, v in usage.items()
                                        if k in ("promptTokenCount", "totalTokenCount")}
            if stream:
                self._stream_events(handler, [obj])
            else:
                handler._send_json(200, obj)
            return
        finish = _FINISH_REASONS.get(g.finish_reason, g.finish_reason)
        parts: list[dict[str, Any]] = []
        if g.thoughts is not None:
            parts.append({"text": g.thoughts, "thought": True})
        pieces = max(1, int(g.text_parts))
        size = max(1, -(-len(g.text) // pieces)) if g.text else 1
        parts.extend({"text": g.text[i:i + size]} for i in range(0, len(g.text), size))
        if not any("thought" not in p for p in parts):
            parts.append({"text": ""})
        if not stream:
            obj = {"candidates": [{"content": {"parts": parts, "role": "model"},
                                   "finishReason": finish, "index": 0}],
                   "modelVersion": model, "responseId": response_id}
            if usage is not None:
                obj["usageMetadata"] = usage
            handler._send_json(200, obj)
            return
        events: list[dict[str, Any]] = []
        for part in parts:
            text = part["text"]
            chunks = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
            for chunk in chunks:
                events.append({"candidates": [{"content": {"parts": [{**part, "text": chunk}],
                                                           "role": "model"}, "index": 0}],
                               "modelVersion": model, "responseId": response_id})
        events[-1]["candidates"][0]["finishReason"] = finish
        if usage is not None:
            events[-1]["usageMetadata"] = usage
        self._stream_events(handler, events)

    def _stream_events(self, handler: Any, events: list[dict[str, Any]]) -> None:
        head = handler._head(200, "text/event-stream", None, {"Cache-Control": "no-cache",
                                                              "X-Emulator": "rlm-gemini"})
        first = True
        for event in events:
            payload = f"data: {json.dumps(event, ensure_ascii=False)}\r\n\r\n".encode()
            frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
            if first:
                frame, first = head + frame, False
            if not handler._write(frame):
                return
        handler._write(b"0\r\n\r\n")

