"""Scripted model providers: what a backend under test talks to.

The backend standard tests never assume how a backend reaches its model. They script a
*provider* (the next reply, its usage, a fault, a stall) and read back what the provider
received. Two providers come with the kit:

* :class:`OpenAIServerProvider`: the OpenAI-compatible HTTP server of :mod:`rlm_testkit.servers` on
  127.0.0.1, for any backend that speaks the OpenAI chat-completions wire format.
* :class:`InProcessProvider`: a callable for in-process backends (``provider.respond`` is the
  function the backend calls), for backends that talk to no server at all.

A backend for another wire format (Anthropic, Gemini, ...) implements :class:`ScriptedProvider`
over its own fake server and returns it from the ``provider`` fixture of its test class. What such
a provider can see of a request beyond its messages and parameters (the model it names, its
headers, the connections the backend holds open) is declared in ``observes``; a standard test
that needs what the provider does not observe is skipped with the reason.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rlm.exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                            BadResponseError, ContextWindowExceededError, RateLimitError,
                            ServerError)
from rlm.types import Message, ModelResponse, Usage

#: The faults a provider can be asked for, and the kernel exception a backend must raise for each.
FAULTS: dict[str, type[BackendError]] = {
    "auth": AuthenticationError,
    "rate_limit": RateLimitError,
    "server": ServerError,
    "connection": BackendConnectionError,
    "bad_response": BadResponseError,
    "context_window": ContextWindowExceededError,
}


@dataclass
class ProviderRequest:
    """One request as the provider saw it: the messages, every other parameter, and (for a
    provider behind HTTP) its headers, lower-case names, and its path with the query."""

    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    path: str = ""


#: What a provider can observe of a request (``ScriptedProvider.observes``): ``"model"`` (the model
#: each request names, :meth:`ScriptedProvider.model_of`), ``"headers"`` (the credentials it
#: carries, :meth:`ScriptedProvider.credentials_of`), ``"connections"`` (how many connections the
#: backend holds open, :meth:`ScriptedProvider.open_connections`).
OBSERVABLE = frozenset({"model", "headers", "connections"})

_KEY_HEADERS = ("x-api-key", "api-key", "x-goog-api-key")


class ScriptedProvider:
    """What the backend standard tests script. Subclass it for a new wire format.

    ``fault_kinds`` lists the keys of :data:`FAULTS` this provider can produce; the error tests
    of the others skip with the reason. ``observes`` lists what of :data:`OBSERVABLE` it records.
    """

    fault_kinds: frozenset[str] = frozenset()
    observes: frozenset[str] = frozenset()

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True, model: str | None = None,
              finish_reason: str | None = None) -> None:
        """Queue the next reply. ``usage=False`` sends no usage at all. ``model``: the model the
        reply says answered (default: the one requested); ``finish_reason``: why it stopped, in
        OpenAI's words (``"stop"``, ``"length"``), sent in the wire format's own."""
        raise NotImplementedError

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        """Answer every request after the queued replies with ``responder(messages)``."""
        raise NotImplementedError

    def fail(self, kind: str, message: str | None = None, *, retry_after: float | None = None,
             status: int | None = None) -> None:
        """Make the next request fail in the way ``kind`` (a key of :data:`FAULTS`) names; for
        the faults that carry one (``auth``, ``rate_limit``, ``server``), the provider's error
        message is ``message`` when given. ``retry_after``: seconds the provider asks the client
        to wait (``Retry-After``, or the wire format's own field); ``status``: the HTTP status of
        a ``server`` fault (default: the provider's usual one)."""
        raise NotImplementedError

    def stall(self, seconds: float) -> None:
        """Make the next request wait ``seconds`` before answering."""
        raise NotImplementedError

    @property
    def requests(self) -> list[ProviderRequest]:
        """Every request received so far, oldest first."""
        raise NotImplementedError

    def connect_kwargs(self) -> dict[str, Any]:
        """Backend keyword arguments that point a backend at this provider."""
        return {}

    def model_of(self, request: ProviderRequest) -> str | None:
        """The model ``request`` asked for (``observes`` has ``"model"``)."""
        model = request.params.get("model")
        return model if isinstance(model, str) else None

    def credentials_of(self, request: ProviderRequest) -> set[str]:
        """The credentials ``request`` carried (``observes`` has ``"headers"``): a bearer token,
        the ``x-api-key`` / ``api-key`` / ``x-goog-api-key`` headers, a ``key=`` query parameter."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        found = {headers[h] for h in _KEY_HEADERS if headers.get(h)}
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.add(token.strip())
        found.update(parse_qs(urlsplit(request.path).query).get("key", []))
        return found

    def open_connections(self) -> int:
        """How many connections to the provider are open now (``observes`` has
        ``"connections"``)."""
        raise NotImplementedError


def server_connections(server: Any) -> int:
    """Open client connections of a kit server (``rlm_testkit.servers``): each handler tracks its
    connection from accept to close."""
    with server._lock:
        return len(server._connections)


class OpenAIServerProvider(ScriptedProvider):
    """Scripts an :class:`rlm_testkit.servers.OpenAICompatibleServer` (already started)."""

    fault_kinds = frozenset(FAULTS)
    observes = OBSERVABLE

    def __init__(self, server: Any):
        self.server = server

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True, model: str | None = None,
              finish_reason: str | None = None) -> None:
        from rlm_testkit.servers import Reply

        self.server.add_replies(Reply(text, prompt_tokens=input_tokens,
                                      completion_tokens=output_tokens, cost=cost, usage=usage,
                                      model=model, finish_reason=finish_reason or "stop"))

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        self.server.responder = lambda messages, body: responder(messages)

    def fail(self, kind: str, message: str | None = None, *, retry_after: float | None = None,
             status: int | None = None) -> None:
        from rlm_testkit.servers import Fault

        faults = {
            "auth": Fault("status", status=401, body=message),
            "rate_limit": Fault("status", status=429, body=message, retry_after=retry_after),
            "server": Fault("status", status=status or 500, body=message),
            "connection": Fault("reset"),
            "bad_response": Fault("malformed"),
            "context_window": Fault("status", status=400, body={"error": {
                "message": "This model's maximum context length is 8192 tokens. However, your "
                           "messages resulted in 9000 tokens.",
                "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded"}}),
        }
        if kind not in faults:
            raise ValueError(f"unknown fault {kind!r}; faults are {', '.join(sorted(faults))}")
        self.server.inject(faults[kind])

    def stall(self, seconds: float) -> None:
        from rlm_testkit.servers import Fault

        self.server.inject(Fault("stall", seconds=seconds))

    @property
    def requests(self) -> list[ProviderRequest]:
        out = []
        with self.server._lock:
            seen = list(zip(self.server.requests, self.server.headers, self.server.paths,
                            strict=True))
        for body, headers, path in seen:
            params = {k: v for k, v in body.items() if k != "messages"}
            out.append(ProviderRequest(list(body.get("messages") or []), params, dict(headers),
                                       path))
        return out

    def connect_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.server.base_url}

    def open_connections(self) -> int:
        return server_connections(self.server)


class InProcessProvider(ScriptedProvider):
    """A provider that is a plain function: ``provider.respond(messages, **params)``.

    Pass ``provider.respond`` to an in-process backend as the thing it calls. It returns a
    :class:`~rlm.types.ModelResponse` (with exactly the scripted usage) or raises the kernel
    exception of a scripted fault, so it also shows what such a backend must let through.
    """

    fault_kinds = frozenset(FAULTS)

    def __init__(self, model: str = "in-process") -> None:
        self.model = model
        self._lock = threading.Lock()
        self._queue: deque[Any] = deque()
        self._stalls: deque[float] = deque()
        self._responder: Callable[[list[Message]], str] | None = None
        self._requests: list[ProviderRequest] = []

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True, model: str | None = None,
              finish_reason: str | None = None) -> None:
        with self._lock:
            self._queue.append(("reply", text, input_tokens, output_tokens, cost, usage,
                                model or self.model, finish_reason or "stop"))

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        self._responder = responder

    def fail(self, kind: str, message: str | None = None, *, retry_after: float | None = None,
             status: int | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; faults are {', '.join(sorted(FAULTS))}")
        with self._lock:
            self._queue.append(("fail", kind, message, retry_after, status))

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._stalls.append(seconds)

    @property
    def requests(self) -> list[ProviderRequest]:
        with self._lock:
            return list(self._requests)

    def respond(self, messages: list[Message], **params: Any) -> ModelResponse:
        msgs = [dict(m) for m in messages]
        with self._lock:
            self._requests.append(ProviderRequest(msgs, dict(params)))
            item = self._queue.popleft() if self._queue else None
            stall = self._stalls.popleft() if self._stalls else 0.0
        if stall:
            time.sleep(stall)
        if item is None:
            if self._responder is None:
                raise BackendError(f"rlm_testkit.InProcessProvider: no scripted reply left for "
                                   f"request #{len(self._requests)}; queue one with reply().")
            text = self._responder(msgs)
            return ModelResponse(text, _estimate(msgs, text), self.model, "stop")
        if item[0] == "fail":
            _, kind, message, retry_after, status = item
            extra: dict[str, Any] = {"retry_after": retry_after} if kind == "rate_limit" else {}
            raise FAULTS[kind](message or f"scripted {kind} fault (rlm_testkit.InProcessProvider)",
                               backend="in-process", model=self.model, status_code=status,
                               **extra)
        _, text, inp, out, cost, usage, model, finish = item
        if not usage:
            est = _estimate(msgs, text)
            return ModelResponse(text, Usage(est.input_tokens, est.output_tokens, None, True),
                                 model, finish)
        est = _estimate(msgs, text)
        return ModelResponse(text, Usage(est.input_tokens if inp is None else inp,
                                         est.output_tokens if out is None else out, cost),
                             model, finish)


def _estimate(messages: list[Message], text: str) -> Usage:
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return Usage(max(1, -(-chars // 4)), max(1, -(-len(text) // 4)))
