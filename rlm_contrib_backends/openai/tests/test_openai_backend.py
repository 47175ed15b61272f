"""The openai / azure_openai backends against rlm_testkit.servers.OpenAICompatibleServer (real HTTP, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import sys
import time

import pytest

from rlm.exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                            BackendTimeoutError, BadResponseError, ConfigurationError,
                            ContextWindowExceededError, RateLimitError, ServerError)
from rlm.protocols import Backend
from rlm_testkit.servers import Fault, OpenAICompatibleServer, Reply
from rlm.types import ModelResponse
from rlm_backend_openai.client import (PLACEHOLDER_API_KEY, AzureOpenAIBackend, OpenAIBackend,
                                       _retry_after, lookup_model)

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
SECRET = "sk-test-SECRET-0123456789abcdef"


def ceil4(n: int) -> int:
    return max(1, math.ceil(n / 4))


# --- plugin registration -----------------------------------------------------------------


def test_entry_point_registered_and_loads_client():
    import rlm

    pm = rlm.PluginManager()
    entry = pm.entry("backend", "openai")
    assert entry.distribution == "rlm-backend-openai"
    assert entry.target_name == "rlm_backend_openai.client:OpenAIBackend"
    assert entry.load() is OpenAIBackend
    assert "rlm_backend_openai.client" in sys.modules
    azure = pm.entry("backend", "azure_openai")
    assert azure.load() is AzureOpenAIBackend


def test_registration_hook_with_a_registrar():
    from rlm.plugin import Registrar
    from rlm_backend_openai import plugin

    reg = Registrar("backend")
    plugin.rlm_register_backends(registrar=reg)
    assert sorted(reg.names()) == ["azure_openai", "openai"]
    assert reg.entries["openai"].description


# --- construction ----------------------------------------------------------------------


def test_model_name_and_model_alias(make_backend):
    assert make_backend(model_name="a").model_name == "a"
    assert make_backend(model_name=None, model="b").model_name == "b"
    assert OpenAIBackend(base_url="http://127.0.0.1:1/v1").model_name == "gpt-4o"
    with pytest.raises(ConfigurationError, match="disagree"):
        OpenAIBackend(model_name="a", model="b", base_url="http://127.0.0.1:1/v1")


@pytest.mark.parametrize("kw", [{"max_retries": -1}, {"timeout": 0}, {"retry_base_delay": -1}])
def test_bad_settings_are_configuration_errors(kw):
    with pytest.raises(ConfigurationError):
        OpenAIBackend(base_url="http://127.0.0.1:1/v1", **kw)


def test_satisfies_the_backend_protocol(make_backend):
    backend = make_backend()
    assert isinstance(backend, Backend)
    assert callable(backend.context_window) and callable(backend.count_tokens)


# --- calls -------------------------------------------------------------------------------


def test_sync_completion(server, make_backend):
    server.add_replies(Reply("the reply", prompt_tokens=1000, completion_tokens=100))
    out = make_backend().completion(MSGS)
    assert isinstance(out, ModelResponse)
    assert out.text == "the reply"
    assert out.model == "gpt-4o"
    assert out.finish_reason == "stop"
    assert (out.usage.input_tokens, out.usage.output_tokens) == (1000, 100)
    assert out.usage.estimated is False
    assert out.usage.cost == pytest.approx((1000 * 2.50 + 100 * 10.00) / 1e6)
    assert server.requests[0]["messages"] == MSGS
    assert server.requests[0]["model"] == "gpt-4o"
    assert "stream" not in server.requests[0]


def test_usage_numbers_from_the_server_estimate(server, make_backend):
    server.add_replies("x" * 10)
    out = make_backend(model_name="unpriced-model").completion(MSGS)
    assert out.usage.input_tokens == ceil4(len("Be brief.") + len("hello"))
    assert out.usage.output_tokens == ceil4(10)
    assert out.usage.cost is None  # unknown model, no cost reported


def test_reported_cost_wins_over_price_table(server, make_backend):
    server.add_replies(Reply("r", prompt_tokens=10, completion_tokens=10, cost=0.123))
    assert make_backend().completion(MSGS).usage.cost == 0.123


def test_prices_kwarg_and_dated_model_names(server, make_backend):
    server.add_replies(Reply("a", prompt_tokens=1_000_000, completion_tokens=1_000_000),
                       Reply("b", prompt_tokens=1_000_000, completion_tokens=0, model="gpt-4o-mini-2024-07-18"),
                       Reply("c", prompt_tokens=1_000_000, completion_tokens=0, model="gpt-4o-2024-08-06"))
    backend = make_backend(model_name="my-model", prices={"my-model": (1.0, 3.0)})
    assert backend.completion(MSGS).usage.cost == pytest.approx(4.0)
    assert backend.completion(MSGS).usage.cost == pytest.approx(0.15)
    assert backend.completion(MSGS).usage.cost == pytest.approx(2.50)
    assert lookup_model(backend.prices, "openai/gpt-4.1-nano") == (0.10, 0.40)
    assert lookup_model(backend.prices, "gpt-4o-mini") == (0.15, 0.60)
    assert lookup_model(backend.prices, "gpt-4oops") is None


def test_served_model_prices_the_call_but_the_requested_name_is_reported(server, make_backend):
    server.add_replies(Reply("x", prompt_tokens=1_000_000, completion_tokens=0, model="gpt-4o-2024-08-06"))
    backend = make_backend(AzureOpenAIBackend, model_name="my-deployment", api_key="k",
                           azure_endpoint=server.url)
    out = backend.completion(MSGS)
    assert out.model == "my-deployment"  # the run's usage is keyed by the configured name
    assert out.usage.cost == pytest.approx(2.50)  # priced as the model behind the deployment


def test_missing_usage_is_estimated_and_logged_once(server, make_backend, caplog):
    server.add_replies(Reply("abcdefghij", usage=False), "second")
    server.inject(Fault("no_usage"))
    server.inject(Fault("no_usage"))
    backend = make_backend()
    with caplog.at_level(logging.WARNING, logger="rlm_backend_openai"):
        first = backend.completion(MSGS)
        second = backend.completion([{"role": "user", "content": "y" * 41}])
    assert first.usage.estimated and second.usage.estimated
    assert first.usage.input_tokens == ceil4(len("Be brief.") + len("hello"))
    assert first.usage.output_tokens == ceil4(10)
    assert second.usage.input_tokens == 11
    assert first.usage.cost == pytest.approx((first.usage.input_tokens * 2.5 + first.usage.output_tokens * 10) / 1e6)
    warnings = [r for r in caplog.records if "estimated" in r.getMessage()]
    assert len(warnings) == 1


def test_sampling_args_arrive_in_the_body(server, make_backend):
    backend = make_backend()
    backend.completion(MSGS, temperature=0.3, max_tokens=55, top_p=0.9, stop=["END"], seed=42,
                       response_format={"type": "json_object"}, presence_penalty=0.1,
                       logit_bias={"50256": -100}, custom_field={"nested": [1, 2]})
    body = server.requests[0]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 55
    assert body["top_p"] == 0.9
    assert body["stop"] == ["END"]
    assert body["seed"] == 42
    assert body["response_format"] == {"type": "json_object"}
    assert body["presence_penalty"] == 0.1
    assert body["logit_bias"] == {"50256": -100}
    assert body["custom_field"] == {"nested": [1, 2]}


def test_model_sampling_kwarg_overrides_for_one_call(server, make_backend):
    backend = make_backend()
    out = backend.completion(MSGS, model="gpt-4.1-mini")
    assert server.requests[0]["model"] == "gpt-4.1-mini"
    assert out.model == "gpt-4.1-mini"
    backend.completion(MSGS)
    assert server.requests[1]["model"] == "gpt-4o"


def test_request_options_among_sampling_args(server, make_backend):
    make_backend().completion(MSGS, extra_headers={"X-Trace": "t1"}, extra_body={"user": "u1"},
                              temperature=0)
    assert server.headers[0]["x-trace"] == "t1"
    assert server.requests[0]["user"] == "u1"
    assert server.requests[0]["temperature"] == 0


def test_none_sampling_args_are_not_sent(server, make_backend):
    make_backend().completion(MSGS, temperature=None, max_tokens=10, model=None)
    body = server.requests[0]
    assert "temperature" not in body
    assert body["max_tokens"] == 10
    assert body["model"] == "gpt-4o"


def test_per_call_timeout(server, make_backend):
    server.inject(Fault("stall", seconds=5))
    backend = make_backend(timeout=30.0, max_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError, match="0.2 s"):
        backend.completion(MSGS, timeout=0.2)
    assert time.perf_counter() - t0 < 2
    assert "timeout" not in server.requests[0]


def test_stream_is_refused(make_backend):
    with pytest.raises(ConfigurationError, match="stream"):
        make_backend().completion(MSGS, stream=True)


def test_string_prompt_is_a_user_message(server, make_backend):
    assert make_backend().completion("just text").text == "echo: just text"
    assert server.requests[0]["messages"] == [{"role": "user", "content": "just text"}]


def test_unicode_round_trip(server, make_backend):
    text = "naïve ☃ 日本語 \U0001f600 \"quotes\" \\ back\nslash"
    server.add_replies(text)
    assert make_backend().completion([{"role": "user", "content": text}]).text == text
    assert server.requests[0]["messages"][0]["content"] == text


def test_async_completion(server, make_backend):
    server.add_replies(Reply("async reply", prompt_tokens=7, completion_tokens=3))
    out = asyncio.run(make_backend().acompletion(MSGS, temperature=0.5))
    assert out.text == "async reply"
    assert (out.usage.input_tokens, out.usage.output_tokens) == (7, 3)
    assert server.requests[0]["temperature"] == 0.5


def test_concurrent_async_calls_are_all_correct(server, make_backend):
    server.latency = 0.05
    backend = make_backend()

    async def main():
        results = await asyncio.gather(*[
            backend.acompletion([{"role": "user", "content": f"q{i}"}], seed=i) for i in range(20)])
        return results, backend._async_client()

    results, client = asyncio.run(main())
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(20)]
    assert sorted(r["seed"] for r in server.requests) == list(range(20))
    assert len(backend._pool.async_clients) == 1 and next(iter(backend._pool.async_clients.values())) is client


def test_sync_client_is_created_once_and_reused(server, make_backend):
    backend = make_backend()
    assert backend._pool.sync_client is None  # lazy
    backend.completion(MSGS)
    first = backend._pool.sync_client
    for _ in range(3):
        backend.completion(MSGS)
    assert backend._pool.sync_client is first


def test_threads_share_the_sync_client(server, make_backend):
    from concurrent.futures import ThreadPoolExecutor

    backend = make_backend()
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: backend.completion([{"role": "user", "content": str(i)}]).text,
                              range(24)))
    assert texts == [f"echo: {i}" for i in range(24)]


# --- keys --------------------------------------------------------------------------------


def test_key_from_argument_is_sent(server, make_backend):
    make_backend(api_key=SECRET).completion(MSGS)
    assert server.headers[0]["Authorization"] == f"Bearer {SECRET}"


def test_key_from_environment(server, make_backend, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    make_backend().completion(MSGS)
    make_backend(api_key="sk-from-arg").completion(MSGS)
    assert server.headers[0]["authorization"] == "Bearer sk-from-env"
    assert server.headers[1]["authorization"] == "Bearer sk-from-arg"


def test_custom_base_url_without_key_sends_a_placeholder(server, make_backend):
    backend = make_backend()
    backend.completion(MSGS)
    assert server.headers[0]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"
    assert "api_key=None" in repr(backend)


@pytest.mark.parametrize("base_url", [None, "https://api.openai.com/v1"])
def test_missing_key_for_openai_names_both_fixes(base_url):
    with pytest.raises(AuthenticationError) as info:
        OpenAIBackend("gpt-4o", base_url=base_url)
    message = str(info.value)
    assert 'backend_kwargs={"api_key": ...}' in message
    assert "OPENAI_API_KEY" in message


def test_openai_base_url_env_counts_as_custom(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    backend = OpenAIBackend("gpt-4o")
    try:
        assert backend.completion(MSGS).text == "echo: hello"
    finally:
        backend.close()


def test_the_key_is_masked_where_it_would_show(server, make_backend):
    # that the key never shows (repr, str, vars, DEBUG logs, 401 and 5xx errors quoting it) is the
    # kit's test_the_api_key_stays_hidden (test_openai_kit.py)
    backend = make_backend(api_key=SECRET)
    assert "'***'" in repr(backend)
    server.inject(Fault("status", status=401, body=f"Incorrect API key provided: {SECRET}."))
    with pytest.raises(AuthenticationError, match=r"Incorrect API key provided: \*\*\*\."):
        backend.completion(MSGS)
    server.inject(Fault("status", status=400, body={"error": {"message": f"bad {SECRET}"}}))
    with pytest.raises(BackendError) as info:
        backend.completion(MSGS)
    assert SECRET not in str(info.value)


# --- faults and retries ------------------------------------------------------------------
# Retries (429 with Retry-After and its cap, 5xx, stalls, resets, the retry limit) are the kit's:
# test_openai_kit.py runs them (capability "retries", synchronous calls through the SDK, async
# ones through the plain-HTTP client); the async tests below run both transports.


def test_retries_send_the_sdk_retry_count(server, make_backend):
    server.add_replies("after the rate limit")
    server.inject(Fault("status", status=429, retry_after=0.01))
    assert make_backend().completion(MSGS).text == "after the rate limit"
    assert server.headers[1]["x-stainless-retry-count"] == "1"


def test_retry_cap_is_honoured_for_5xx(server, make_backend):
    for _ in range(10):
        server.inject(Fault("status", status=502, body="upstream is down"))
    with pytest.raises(ServerError) as info:
        make_backend(max_retries=2).completion(MSGS)
    assert len(server.requests) == 3  # one try plus two retries
    err = info.value
    assert err.status_code == 502
    assert err.provider_message == "upstream is down"
    assert "upstream is down" in str(err)
    assert err.backend == "openai" and err.model == "gpt-4o"


def test_rate_limit_keeps_the_status_and_the_message(server, make_backend):
    server.inject(Fault("status", status=429, retry_after=0.01))
    with pytest.raises(RateLimitError) as info:
        make_backend(max_retries=0).completion(MSGS)
    assert info.value.status_code == 429
    assert "Rate limit reached" in str(info.value)


def test_max_retries_zero_means_one_attempt(server, make_backend):
    server.inject(Fault("status", status=500))
    with pytest.raises(ServerError):
        make_backend(max_retries=0).completion(MSGS)
    assert len(server.requests) == 1


def test_insufficient_quota_is_not_retried(server, make_backend):
    server.inject(Fault("status", status=429, body={"error": {
        "message": "You exceeded your current quota.", "type": "insufficient_quota",
        "code": "insufficient_quota"}}))
    with pytest.raises(RateLimitError, match="current quota"):
        make_backend().completion(MSGS)
    assert len(server.requests) == 1


def test_stall_beyond_timeout_is_a_timeout_error(server, make_backend):
    server.inject(Fault("stall", seconds=5))
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError) as info:
        make_backend(timeout=0.2, max_retries=0).completion(MSGS)
    assert time.perf_counter() - t0 < 2
    assert "timeout" in str(info.value)


def test_unreachable_server_is_a_connection_error(make_backend):
    with OpenAICompatibleServer() as gone:
        url = gone.base_url
    with pytest.raises(BackendConnectionError):
        make_backend(base_url=url, max_retries=0).completion(MSGS)


def test_malformed_is_a_bad_response_not_retried(server, make_backend):
    server.inject(Fault("malformed"))
    with pytest.raises(BadResponseError) as info:
        make_backend().completion(MSGS)
    assert len(server.requests) == 1
    assert "not JSON" in str(info.value)


@pytest.mark.parametrize("body", ['{"object": "chat.completion", "choices": []}', '[1, 2]',
                                  '{"choices": [{"index": 0}]}'])
def test_json_without_choices_is_a_bad_response(server, make_backend, body):
    server.inject(Fault("malformed", body=body))
    with pytest.raises(BadResponseError):
        make_backend().completion(MSGS)


def test_200_with_error_object_is_a_bad_response(server, make_backend):
    server.inject(Fault("malformed", body='{"error": {"message": "provider overloaded", "code": 502}}'))
    with pytest.raises(BadResponseError, match="provider overloaded") as info:
        make_backend().completion(MSGS)
    assert info.value.provider_message == "provider overloaded"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried(server, make_backend, status):
    server.inject(Fault("status", status=status, body="Incorrect API key provided."))
    with pytest.raises(AuthenticationError) as info:
        make_backend().completion(MSGS)
    assert len(server.requests) == 1
    assert info.value.status_code == status
    assert info.value.provider_message == "Incorrect API key provided."
    assert "Incorrect API key provided." in str(info.value)


def test_context_length_exceeded(server, make_backend):
    server.inject(Fault("status", status=400, body={"error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages "
                   "resulted in 200000 tokens.", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}}))
    with pytest.raises(ContextWindowExceededError) as info:
        make_backend().completion(MSGS)
    assert "maximum context length" in str(info.value)
    assert info.value.status_code == 400
    assert len(server.requests) == 1


def test_other_4xx_is_a_plain_backend_error(server, make_backend):
    server.inject(Fault("status", status=404, body="The model `nope` does not exist"))
    with pytest.raises(BackendError) as info:
        make_backend().completion(MSGS)
    assert type(info.value) is BackendError
    assert info.value.status_code == 404
    assert "does not exist" in str(info.value)
    assert len(server.requests) == 1


def test_async_retries_and_errors(server, make_backend):
    backend = make_backend()
    server.add_replies("async after retries")
    server.inject(Fault("status", status=429, retry_after=0.01))
    server.inject(Fault("reset"))

    async def main():
        ok = await backend.acompletion(MSGS)
        server.inject(Fault("status", status=401))
        with pytest.raises(AuthenticationError):
            await backend.acompletion(MSGS)
        server.inject(Fault("malformed"))
        with pytest.raises(BadResponseError):
            await backend.acompletion(MSGS)
        return ok

    assert asyncio.run(main()).text == "async after retries"
    assert len(server.requests) == 5


def test_async_timeout(server, make_backend):
    server.inject(Fault("stall", seconds=5))
    with pytest.raises(BackendTimeoutError):
        asyncio.run(make_backend(timeout=0.2, max_retries=0).acompletion(MSGS))


def test_backoff_is_exponential_with_jitter_and_capped():
    backend = OpenAIBackend(base_url="http://127.0.0.1:1/v1", retry_base_delay=1.0, retry_max_delay=30.0)
    err = ServerError("x")
    for attempt in range(8):
        delays = [backend._retry_delay(err, attempt) for _ in range(50)]
        full = min(2.0 ** attempt, 30.0)
        assert all(full * 0.5 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    rate = RateLimitError("x", retry_after=7.0)
    assert backend._retry_delay(rate, 0) == 7.0
    assert backend._retry_delay(RateLimitError("x", retry_after=500.0), 0) == 30.0


def test_retry_after_header_parsing():
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after": "0.5"}) == 0.5
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    future = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= _retry_after({"retry-after": future}) <= 21
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None
    assert _retry_after(None) is None


# --- extras ------------------------------------------------------------------------------


def test_context_window(make_backend):
    backend = make_backend(model_name="gpt-4o-2024-08-06")
    assert backend.context_window() == 128_000
    assert backend.context_window("gpt-4.1-mini") == 1_047_576
    assert backend.context_window("o3-mini") == 200_000
    assert backend.context_window("gpt-4") == 8_192
    assert backend.context_window("local-llama") is None
    assert make_backend(context_windows={"local-llama": 4096}).context_window("local-llama") == 4096


def test_count_tokens(make_backend):
    backend = make_backend()
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        assert backend.count_tokens(MSGS) == ceil4(len("Be brief.") + len("hello"))
        assert backend.count_tokens([{"role": "user", "content": "a" * 400}]) == 100
    else:  # pragma: no cover - tiktoken is not a dependency
        assert backend.count_tokens(MSGS) > 0
    assert backend.count_tokens("abcd") >= 1


# --- closing -----------------------------------------------------------------------------


def test_close_is_idempotent_and_backend_reusable(server, make_backend):
    backend = make_backend()
    backend.completion(MSGS)
    sync = backend._pool.sync_client
    backend.close()
    assert sync.is_closed()
    backend.close()
    assert backend.completion(MSGS).text == "echo: hello"  # a fresh pool after close


def test_close_after_the_event_loop_is_gone(server, make_backend, recwarn):
    backend = make_backend()
    asyncio.run(backend.acompletion(MSGS))
    backend.completion(MSGS)
    backend.close()  # the async client's loop is closed: must not raise
    assert backend._pool.async_clients == {} and backend._pool.sync_client is None
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"  # works on a new loop


def test_close_inside_a_running_loop(server, make_backend):
    backend = make_backend()

    async def main():
        await backend.acompletion(MSGS)
        client = backend._async_client()
        backend.close()
        await asyncio.sleep(0.05)  # the scheduled close runs
        return client

    client = asyncio.run(main())
    assert client.is_closed()


def test_aclose(server, make_backend):
    backend = make_backend()

    async def main():
        await backend.acompletion(MSGS)
        client = backend._async_client()
        await backend.aclose()
        return client

    assert asyncio.run(main()).is_closed()


def test_two_loops_get_their_own_clients(server, make_backend):
    backend = make_backend()
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert loop_a.run_until_complete(backend.acompletion(MSGS)).text == "echo: hello"
        assert loop_b.run_until_complete(backend.acompletion(MSGS)).text == "echo: hello"
        pools = backend._pool.async_clients if backend._plain_target is None else backend._plain_pools
        assert len(pools) == 2
        backend.close()  # loops are alive but not running: closed there
    finally:
        loop_a.close()
        loop_b.close()


# --- Azure -------------------------------------------------------------------------------


def test_azure_against_the_local_server(server, make_backend):
    server.add_replies(Reply("from azure", prompt_tokens=5, completion_tokens=2))
    backend = make_backend(AzureOpenAIBackend, model_name="my-deployment", api_key=SECRET,
                           azure_endpoint=server.url, api_version="2024-06-01")
    out = backend.completion(MSGS, temperature=0.1)
    assert out.text == "from azure"
    assert (out.usage.input_tokens, out.usage.output_tokens) == (5, 2)
    assert server.paths[0] == "/openai/deployments/my-deployment/chat/completions?api-version=2024-06-01"
    assert server.headers[0]["api-key"] == SECRET
    assert server.requests[0]["temperature"] == 0.1
    assert SECRET not in repr(backend)


def test_azure_fixed_deployment_and_env_key(server, make_backend, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-env-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    backend = make_backend(AzureOpenAIBackend, model_name=None, azure_deployment="dep-1")
    assert backend.model_name == "dep-1"
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"
    assert server.paths[0].startswith("/openai/deployments/dep-1/chat/completions?api-version=")
    assert server.headers[0]["api-key"] == "az-env-key"


def test_azure_errors_and_retries(server, make_backend):
    backend = make_backend(AzureOpenAIBackend, model_name="dep", api_key="k", azure_endpoint=server.url)
    server.inject(Fault("status", status=429, retry_after=0.01))
    assert backend.completion(MSGS).text == "echo: hello"
    server.inject(Fault("status", status=401))
    with pytest.raises(AuthenticationError) as info:
        backend.completion(MSGS)
    assert info.value.backend == "azure_openai"


def test_azure_missing_key_and_endpoint():
    with pytest.raises(AuthenticationError) as info:
        AzureOpenAIBackend("dep", azure_endpoint="https://example.openai.azure.com")
    assert 'backend_kwargs={"api_key": ...}' in str(info.value)
    assert "AZURE_OPENAI_API_KEY" in str(info.value)
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIBackend("dep", api_key="k")
