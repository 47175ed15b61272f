"""Every API backend against a real HTTP server on 127.0.0.1 speaking its wire format, with faults.

One matrix: openai, vllm, openrouter and portkey (OpenAI chat completions), anthropic (Messages
API), and litellm routed to both (``openai/...`` and ``anthropic/...`` with ``api_base``). Each
backend must: answer sync and async with usage and a cost, pass sampling arguments through, honour
``Retry-After`` on 429 (with a cap), retry 5xx and resets and stop at ``max_retries``, time out a
stalled response, refuse malformed JSON without retrying, estimate usage when the server omits
it, map 401 to AuthenticationError, and never show its key.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from rlm.exceptions import (AuthenticationError, BackendConnectionError, BackendTimeoutError,
                            BadResponseError, RateLimitError, ServerError)
from rlm.protocols import Backend
from rlm_testkit.servers import AnthropicCompatibleServer, Fault, OpenAICompatibleServer, Reply

KEY = "sk-matrix-SECRET-0123456789abcdef"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
       "ANTHROPIC_AUTH_TOKEN", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "PORTKEY_API_KEY",
       "PORTKEY_BASE_URL", "PORTKEY_GATEWAY_URL", "VLLM_API_KEY", "VLLM_BASE_URL")


def _openai(srv, **kw):
    from rlm_backend_openai.client import OpenAIBackend
    return OpenAIBackend("gpt-4o", base_url=srv.base_url, api_key=KEY, **kw)


def _vllm(srv, **kw):
    from rlm_backend_vllm.client import VLLMBackend
    return VLLMBackend("meta-llama/Llama-3-70b", base_url=srv.base_url, api_key=KEY,
                       prices={"meta-llama/Llama-3-70b": (0.5, 1.0)}, **kw)


def _openrouter(srv, **kw):
    from rlm_backend_openrouter.client import OpenRouterBackend
    return OpenRouterBackend("openai/gpt-4o", base_url=srv.base_url, api_key=KEY, **kw)


def _portkey(srv, **kw):
    from rlm_backend_portkey.client import PortkeyBackend
    return PortkeyBackend("@openai/gpt-5-nano", base_url=srv.base_url, api_key=KEY, **kw)


def _anthropic(srv, **kw):
    from rlm_backend_anthropic.client import AnthropicBackend
    return AnthropicBackend("claude-sonnet-4-20250514", base_url=srv.base_url, api_key=KEY, **kw)


def _litellm_openai(srv, **kw):
    from rlm_backend_litellm.client import LiteLLMBackend
    return LiteLLMBackend("openai/gpt-4o", api_base=srv.base_url, api_key=KEY, **kw)


def _litellm_anthropic(srv, **kw):
    from rlm_backend_litellm.client import LiteLLMBackend
    return LiteLLMBackend("anthropic/claude-3-5-haiku-20241022", api_base=srv.base_url, api_key=KEY, **kw)


BACKENDS = {
    "openai": (OpenAICompatibleServer, _openai),
    "vllm": (OpenAICompatibleServer, _vllm),
    "openrouter": (OpenAICompatibleServer, _openrouter),
    "portkey": (OpenAICompatibleServer, _portkey),
    "anthropic": (AnthropicCompatibleServer, _anthropic),
    "litellm-openai": (OpenAICompatibleServer, _litellm_openai),
    "litellm-anthropic": (AnthropicCompatibleServer, _litellm_anthropic),
}


def request_id(setup) -> str:
    return setup[2]


@pytest.fixture(params=list(BACKENDS))
def setup(request, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    server_cls, factory = BACKENDS[request.param]
    built = []
    with server_cls(responder=lambda messages, body: f"echo: {messages[-1]['content']}") as srv:
        def make(**kw):
            kw.setdefault("retry_base_delay", 0.001)
            kw.setdefault("timeout", 10.0)
            backend = factory(srv, **kw)
            built.append(backend)
            return backend
        yield srv, make, request.param
        for backend in built:
            backend.close()


def test_sync_and_async_with_usage_cost_and_sampling(setup):
    srv, make, _ = setup
    srv.add_replies(Reply("first", prompt_tokens=1000, completion_tokens=100),
                    Reply("second", prompt_tokens=10, completion_tokens=5))
    backend = make()
    assert isinstance(backend, Backend)
    out = backend.completion(MSGS, temperature=0.25, top_p=0.5)
    assert out.text == "first"
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.estimated) == (1000, 100, False)
    assert out.usage.cost is not None and out.usage.cost > 0
    assert srv.requests[0]["temperature"] == 0.25 and srv.requests[0]["top_p"] == 0.5
    out2 = asyncio.run(backend.acompletion(MSGS, temperature=0.75))
    assert out2.text == "second" and out2.usage.input_tokens == 10
    assert srv.requests[1]["temperature"] == 0.75


def test_429_retry_after_is_honoured(setup):
    srv, make, _ = setup
    srv.inject(Fault("status", status=429, retry_after=0.3))
    t0 = time.perf_counter()
    assert make(retry_base_delay=0.0).completion(MSGS).text == "echo: hello"
    assert time.perf_counter() - t0 >= 0.28
    assert len(srv.requests) == 2


def test_retry_after_is_capped(setup):
    srv, make, _ = setup
    backend = make(retry_max_delay=0.05)
    assert backend.completion(MSGS).text == "echo: hello"  # loads the SDK: not what is timed
    srv.inject(Fault("status", status=429, retry_after=3600))
    t0 = time.perf_counter()
    assert backend.completion(MSGS).text == "echo: hello"
    assert time.perf_counter() - t0 < 3


def test_rate_limit_beyond_retries(setup):
    srv, make, _ = setup
    for _ in range(3):
        srv.inject(Fault("status", status=429, retry_after=0.01))
    with pytest.raises(RateLimitError) as info:
        make(max_retries=1).completion(MSGS)
    assert len(srv.requests) == 2 and info.value.status_code == 429


def test_5xx_retried_and_capped_with_the_provider_message(setup):
    srv, make, _ = setup
    srv.inject(Fault("status", status=500))
    assert make().completion(MSGS).text == "echo: hello"
    srv.reset()
    for _ in range(4):
        srv.inject(Fault("status", status=502, body="upstream is down"))
    with pytest.raises(ServerError, match="upstream is down") as info:
        make(max_retries=2).completion(MSGS)
    assert len(srv.requests) == 3 and info.value.status_code == 502


def test_stall_times_out(setup):
    srv, make, _ = setup
    backend = make(timeout=0.3, max_retries=0)
    # A first call loads the SDK (litellm takes seconds to import on a loaded machine): only the
    # stalled call is timed.
    assert backend.completion(MSGS).text == "echo: hello"
    srv.inject(Fault("stall", seconds=5))
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError):
        backend.completion(MSGS)
    assert time.perf_counter() - t0 < 3


def test_reset_is_retried(setup):
    srv, make, _ = setup
    srv.inject(Fault("reset"))
    assert make().completion(MSGS).text == "echo: hello"
    assert len(srv.requests) == 2
    srv.reset()
    for _ in range(2):
        srv.inject(Fault("reset"))
    with pytest.raises(BackendConnectionError):
        make(max_retries=1).completion(MSGS)


def test_malformed_json_is_a_bad_response_not_retried(setup):
    srv, make, _ = setup
    srv.inject(Fault("malformed"))
    with pytest.raises(BadResponseError):
        make().completion(MSGS)
    assert len(srv.requests) == 1


def test_missing_usage_is_estimated_and_still_priced(setup):
    srv, make, _ = setup
    srv.inject(Fault("no_usage"))
    out = make().completion(MSGS)
    assert out.text == "echo: hello"
    if request_id(setup) == "litellm-anthropic":
        # LiteLLM's Anthropic route counts the tokens itself (with its tokenizer) when the reply
        # has no usage, so the counts arrive as reported ones
        assert out.usage.input_tokens >= 1 and out.usage.output_tokens >= 1
    else:
        assert out.usage.estimated is True
    assert out.usage.input_tokens >= 1 and out.usage.output_tokens >= 1
    assert out.usage.cost is not None  # so max_budget still counts the call


def test_async_faults(setup):
    srv, make, _ = setup
    backend = make()
    srv.inject(Fault("status", status=503))
    srv.inject(Fault("reset"))
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"
    assert len(srv.requests) == 3


def test_401_is_not_retried_and_the_key_never_shows(setup, caplog):
    srv, make, _ = setup
    backend = make(max_retries=2)
    assert KEY not in repr(backend) and KEY not in str(backend)
    srv.inject(Fault("status", status=401, body=f"Incorrect API key provided: {KEY}"))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AuthenticationError) as info:
            backend.completion(MSGS)
    assert len(srv.requests) == 1
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err) and KEY not in (err.provider_message or "")
    assert "Incorrect API key provided" in str(err)
    assert all(KEY not in r.getMessage() for r in caplog.records)
