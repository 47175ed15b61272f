"""The scripted backend: replies come from a list or a function, through the real RLM loop.

    RLM(backend="scripted", backend_kwargs={"replies": ["```repl\\nFINAL(42)\\n```"]})

It is for tests and documentation: it is not a model. Usage is computed deterministically
(about four characters per token) so limits and usage reports behave as with a real backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rlm.exceptions import BackendError, ConfigurationError
from rlm.plugin import estimate_tokens
from rlm.plugin import BaseBackend
from rlm.types import Message, ModelResponse, Usage

Responder = Callable[[list[Message]], Any]


class ScriptedBackend(BaseBackend):
    """``replies``: strings (or callables of the messages, or exceptions to raise) consumed in
    order; ``responder``: a callable of the messages used when ``replies`` is empty or exhausted.

    ``prices=(usd_per_million_input, usd_per_million_output)`` gives every call a cost, so
    ``max_budget`` can be exercised; ``latency`` sleeps before each reply; ``context_window``
    sets what compaction sees.
    """

    def __init__(self, replies: Sequence[Any] | None = None, responder: Responder | None = None,
                 model_name: str = "scripted", prices: tuple[float, float] | None = None,
                 latency: float = 0.0, context_window: int = 128_000, model: str | None = None):
        if replies is None and responder is None:
            raise ConfigurationError(
                "the scripted backend needs backend_kwargs={'replies': [...]} or "
                "{'responder': callable}: it replays what you give it.")
        if replies is not None and (isinstance(replies, (str, bytes)) or not isinstance(replies, Sequence)):
            raise ConfigurationError("scripted backend: replies must be a list of strings.")
        if responder is not None and not callable(responder):
            raise ConfigurationError("scripted backend: responder must be callable.")
        self.model_name = model or model_name
        self._replies = list(replies or [])
        self._responder = responder
        self._prices = prices
        self._latency = latency
        self.default_context_window = context_window
        self._lock = threading.Lock()
        self.calls: list[list[Message]] = []
        self.sampling: list[dict[str, Any]] = []

    def _next(self, messages: list[Message]) -> Any:
        with self._lock:
            self.calls.append(messages)
            if self._replies:
                return self._replies.pop(0)
        if self._responder is not None:
            return self._responder
        raise BackendError(
            f"scripted backend {self.model_name!r} ran out of replies after {len(self.calls) - 1} "
            "calls; add replies or a responder.", backend="scripted", model=self.model_name)

    def _respond(self, messages: Sequence[Message], sampling: dict[str, Any]) -> ModelResponse:
        msgs = [dict(m) for m in messages]
        with self._lock:
            self.sampling.append(dict(sampling))
        reply = self._next(msgs)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(msgs)
        if isinstance(reply, ModelResponse):
            return reply
        text = str(reply)
        inp, out = estimate_tokens(msgs), estimate_tokens(text)
        cost = None
        if self._prices is not None:
            cost = inp * self._prices[0] / 1e6 + out * self._prices[1] / 1e6
        model = sampling.get("model") or self.model_name
        return ModelResponse(text, Usage(inp, out, cost), model, "stop")

    def completion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse:
        if self._latency:
            import time

            time.sleep(self._latency)
        return self._respond(messages, sampling)

    async def acompletion(self, messages: Sequence[Message], **sampling: Any) -> ModelResponse:
        if self._latency:
            await asyncio.sleep(self._latency)
        return self._respond(messages, sampling)
