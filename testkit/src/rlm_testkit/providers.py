"""Scripted model providers: what a backend under test talks to.

The backend standard tests never assume how a backend reaches its model. They script a
*provider* (the next reply, its usage, a fault, a stall) and read back what the provider
received. Two providers come with the kit:

* :class:`OpenAIServerProvider`: the OpenAI-compatible HTTP server of :mod:`rlm_testkit.servers` on
  127.0.0.1, for any backend that speaks the OpenAI chat-completions wire format.
* :class:`InProcessProvider`: a callable for in-process backends (``provider.respond`` is the
  function the backend calls), for backends that talk to no server at all.

A backend for another wire format (Anthropic, Gemini, ...) implements :class:`ScriptedProvider`
over its own fake server and returns it from the ``provider`` fixture of its test class.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    """One request as the provider saw it: the messages and every other parameter."""

    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)


class ScriptedProvider:
    """What the backend standard tests script. Subclass it for a new wire format.

    ``fault_kinds`` lists the keys of :data:`FAULTS` this provider can produce; the error tests
    of the others skip with the reason.
    """

    fault_kinds: frozenset[str] = frozenset()

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True) -> None:
        """Queue the next reply. ``usage=False`` sends no usage at all."""
        raise NotImplementedError

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        """Answer every request after the queued replies with ``responder(messages)``."""
        raise NotImplementedError

    def fail(self, kind: str) -> None:
        """Make the next request fail in the way ``kind`` (a key of :data:`FAULTS`) names."""
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


class OpenAIServerProvider(ScriptedProvider):
    """Scripts an :class:`rlm_testkit.servers.OpenAICompatibleServer` (already started)."""

    fault_kinds = frozenset(FAULTS)

    def __init__(self, server: Any):
        self.server = server

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True) -> None:
        from rlm_testkit.servers import Reply

        self.server.add_replies(Reply(text, prompt_tokens=input_tokens,
                                      completion_tokens=output_tokens, cost=cost, usage=usage))

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        self.server.responder = lambda messages, body: responder(messages)

    def fail(self, kind: str) -> None:
        from rlm_testkit.servers import Fault

        faults = {
            "auth": Fault("status", status=401),
            "rate_limit": Fault("status", status=429),
            "server": Fault("status", status=500),
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
        for body in list(self.server.requests):
            params = {k: v for k, v in body.items() if k != "messages"}
            out.append(ProviderRequest(list(body.get("messages") or []), params))
        return out

    def connect_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.server.base_url}


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
              cost: float | None = None, usage: bool = True) -> None:
        with self._lock:
            self._queue.append(("reply", text, input_tokens, output_tokens, cost, usage))

    def respond_with(self, responder: Callable[[list[Message]], str]) -> None:
        self._responder = responder

    def fail(self, kind: str) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; faults are {', '.join(sorted(FAULTS))}")
        with self._lock:
            self._queue.append(("fail", kind))

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
            kind = item[1]
            raise FAULTS[kind](f"scripted {kind} fault (rlm_testkit.InProcessProvider)",
                               backend="in-process", model=self.model)
        _, text, inp, out, cost, usage = item
        if not usage:
            est = _estimate(msgs, text)
            return ModelResponse(text, Usage(est.input_tokens, est.output_tokens, None, True),
                                 self.model, "stop")
        est = _estimate(msgs, text)
        return ModelResponse(text, Usage(est.input_tokens if inp is None else inp,
                                         est.output_tokens if out is None else out, cost),
                             self.model, "stop")


def _estimate(messages: list[Message], text: str) -> Usage:
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return Usage(max(1, -(-chars // 4)), max(1, -(-len(text) // 4)))
