"""The gemini backend passes the conformance kit (rlm-testkit) against the Gemini API emulator on
127.0.0.1 (rlm_testkit.servers.GeminiEmulator), through the real google-genai SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rlm_testkit.servers import Fault, GeminiEmulator, GeminiReply
from rlm_testkit.servers.gemini import chat_messages, gemini_error_body
from rlm_testkit import BackendTests
from rlm_testkit.providers import (FAULTS, OBSERVABLE, ProviderRequest, ScriptedProvider,
                                   server_connections)

# generationConfig fields as the kit names them (its sampling arguments use OpenAI spellings)
_KIT_NAMES = {"maxOutputTokens": "max_tokens", "topP": "top_p", "topK": "top_k",
              "stopSequences": "stop"}


class GeminiEmulatorProvider(ScriptedProvider):
    """Scripts a GeminiEmulator for the kit's standard backend tests. Every fault is the one the
    Gemini API sends: a bad key is a 400 whose ErrorInfo reason is API_KEY_INVALID, a rate limit a
    429 RESOURCE_EXHAUSTED, an overload a 503 UNAVAILABLE, a long prompt a 400 naming the limit."""

    fault_kinds = frozenset(FAULTS)
    observes = OBSERVABLE

    def __init__(self, emu: GeminiEmulator):
        self.emu = emu

    def reply(self, text: str, *, input_tokens: int | None = None, output_tokens: int | None = None,
              cost: float | None = None, usage: bool = True, model: str | None = None,
              finish_reason: str | None = None) -> None:
        del cost  # the Gemini API reports no cost
        self.emu.add_replies(GeminiReply(text, prompt_tokens=input_tokens,
                                         completion_tokens=output_tokens, usage=usage, model=model,
                                         finish_reason=finish_reason or "stop"))

    def respond_with(self, responder: Callable[[list[Any]], str]) -> None:
        self.emu.responder = lambda messages, body: responder(messages)

    def fail(self, kind: str, message: str | None = None, *, retry_after: float | None = None,
             status: int | None = None) -> None:
        faults = {
            "auth": Fault("status", status=400, body=gemini_error_body(
                400, message or "API key not valid. Please pass a valid API key.", details=[{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com"}])),
            "rate_limit": Fault("status", status=429, body=message, retry_after=retry_after),
            "server": Fault("status", status=status or 503, body=message),
            "connection": Fault("reset"),
            "bad_response": Fault("malformed"),
            "context_window": Fault("status", status=400, body=gemini_error_body(
                400, "The input token count (1200000) exceeds the maximum number of tokens allowed "
                     "(1048576).")),
        }
        self.emu.inject(faults[kind])

    def stall(self, seconds: float) -> None:
        self.emu.inject(Fault("stall", seconds=seconds))

    @property
    def requests(self) -> list[ProviderRequest]:
        out = []
        for body, headers, path in zip(list(self.emu.requests), list(self.emu.headers),
                                       list(self.emu.paths), strict=False):
            config = body.get("generationConfig") or {}
            params = {_KIT_NAMES.get(k, k): v for k, v in config.items()}
            params["model"] = body.get("model")
            out.append(ProviderRequest(chat_messages(body), params, dict(headers), path))
        return out

    def connect_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.emu.base_url}

    def open_connections(self) -> int:
        return server_connections(self.emu)


class TestGeminiKit(BackendTests):
    plugin = "rlm_backend_gemini.plugin"
    backend_name = "gemini"
    backend_kwargs = {"model_name": "gemini-kit", "api_key": "AIza-kit-test-key"}
    no_retry_kwargs = {"max_retries": 0}
    capabilities = {"retries": True, "key_hidden": True}
    # No "cost" capability: the Gemini API reports no cost per call; the backend prices calls from
    # its own table (test_gemini_backend.py), and "gemini-kit" is not in it.

    @pytest.fixture
    def provider(self) -> Iterator[ScriptedProvider]:
        with GeminiEmulator(model="gemini-kit", api_key="AIza-kit-test-key") as emu:
            yield GeminiEmulatorProvider(emu)
