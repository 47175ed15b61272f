"""The anthropic backend passes the conformance kit (rlm-testkit) against a scripted Anthropic
Messages API server on 127.0.0.1 (rlm_testkit.servers.AnthropicCompatibleServer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rlm_testkit.servers import AnthropicCompatibleServer, AnthropicReply, Fault
from rlm_testkit import BackendTests
from rlm_testkit.providers import (FAULTS, OBSERVABLE, ProviderRequest, ScriptedProvider,
                                   server_connections)


class AnthropicServerProvider(ScriptedProvider):
    """Scripts an AnthropicCompatibleServer for the kit's standard backend tests."""

    fault_kinds = frozenset(FAULTS)
    observes = OBSERVABLE

    def __init__(self, server: AnthropicCompatibleServer):
        self.server = server

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True, model: str | None = None,
              finish_reason: str | None = None) -> None:
        self.server.add_replies(AnthropicReply(text, prompt_tokens=input_tokens,
                                               completion_tokens=output_tokens, cost=cost,
                                               usage=usage, model=model,
                                               finish_reason=finish_reason or "stop"))

    def respond_with(self, responder: Callable[[list[Any]], str]) -> None:
        self.server.responder = lambda messages, body: responder(messages)

    def fail(self, kind: str, message: str | None = None, *, retry_after: float | None = None,
             status: int | None = None) -> None:
        faults = {
            "auth": Fault("status", status=401, body=message),
            "rate_limit": Fault("status", status=429, body=message, retry_after=retry_after),
            "server": Fault("status", status=status or 529, body=message),  # Anthropic's "overloaded"
            "connection": Fault("reset"),
            "bad_response": Fault("malformed"),
            "context_window": Fault("status", status=400, body={"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 210000 tokens > 200000 maximum"}}),
        }
        self.server.inject(faults[kind])

    def stall(self, seconds: float) -> None:
        self.server.inject(Fault("stall", seconds=seconds))

    @property
    def requests(self) -> list[ProviderRequest]:
        out = []
        for body, headers in zip(list(self.server.requests), list(self.server.headers),
                                 strict=False):
            messages = list(body.get("messages") or [])
            if body.get("system"):
                system = body["system"]
                if isinstance(system, list):
                    system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
                messages = [{"role": "system", "content": system}, *messages]
            out.append(ProviderRequest(messages, {k: v for k, v in body.items()
                                                  if k not in ("messages", "system")},
                                       dict(headers)))
        return out

    def connect_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.server.base_url}

    def open_connections(self) -> int:
        return server_connections(self.server)


class TestAnthropicKit(BackendTests):
    plugin = "rlm_backend_anthropic.plugin"
    backend_name = "anthropic"
    backend_kwargs = {"model_name": "claude-kit", "api_key": "sk-ant-kit-test"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"retries": True, "key_hidden": True}
    # No "cost" capability: Anthropic does not report a cost per call; the backend prices calls
    # from its table (tested in test_anthropic_backend.py), and "claude-kit" is not in it.

    @pytest.fixture
    def provider(self) -> Iterator[ScriptedProvider]:
        with AnthropicCompatibleServer(model="claude-kit") as server:
            yield AnthropicServerProvider(server)
