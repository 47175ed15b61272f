"""The anthropic backend against rlm_testkit.servers.AnthropicCompatibleServer (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                            BackendTimeoutError, BadResponseError, ConfigurationError,
                            ContextWindowExceededError, ServerError)
from rlm_testkit.servers import AnthropicCompatibleServer, AnthropicReply, Fault
from rlm_backend_anthropic.client import AnthropicBackend, to_messages_api

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
SECRET = "sk-ant-test-SECRET-0123456789"


def ceil4(n: int) -> int:
    return max(1, math.ceil(n / 4))


# --- plugin --------------------------------------------------------------------------------


def test_entry_point_registered():
    import rlm

    entry = rlm.PluginManager().entry("backend", "anthropic")
    assert entry.distribution == "rlm-backend-anthropic"
    assert entry.load() is AnthropicBackend


# --- message translation -------------------------------------------------------------------


def test_system_goes_top_level_and_roles_alternate():
    system, msgs = to_messages_api([
        {"role": "system", "content": "A"}, {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a1"},
        {"role": "system", "content": "B"}, {"role": "user", "content": "u3"}])
    assert system == "A\n\nB"
    assert msgs == [{"role": "user", "content": "u1\n\nu2"}, {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "u3"}]


def test_only_a_system_message_becomes_the_user_message():
    system, msgs = to_messages_api([{"role": "system", "content": "just this"}])
    assert system is None and msgs == [{"role": "user", "content": "just this"}]


def test_block_contents_are_kept_and_merged():
    blocks = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]
    system, msgs = to_messages_api([{"role": "user", "content": blocks}, {"role": "user", "content": "y"}])
    assert msgs == [{"role": "user", "content": blocks + [{"type": "text", "text": "y"}]}]


_roles = st.sampled_from(["system", "user", "assistant"])
_texts = st.text(min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_roles, _texts), min_size=1, max_size=12))
def test_translation_properties(pairs):
    messages = [{"role": r, "content": t} for r, t in pairs]
    system, out = to_messages_api(messages)
    assert out, "the API needs at least one message"
    assert all(m["role"] in ("user", "assistant") for m in out)
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(out))  # alternation
    # no text is lost: every non-system text appears, in order, in the translated messages
    joined = "\x00".join(m["content"] for m in out)
    pos = 0
    for r, t in pairs:
        if r != "system" and t:
            found = joined.find(t, pos)
            assert found >= 0
            pos = found + len(t)
    sys_texts = [t for r, t in pairs if r == "system"]
    if any(r != "system" for r, _ in pairs):
        assert system == ("\n\n".join(sys_texts) if sys_texts else None)


# --- calls ---------------------------------------------------------------------------------


def test_sync_completion_usage_and_cost(server, make_backend):
    server.add_replies(AnthropicReply("the reply", prompt_tokens=1000, completion_tokens=100))
    out = make_backend(api_key=SECRET).completion(MSGS, temperature=0.2)
    assert out.text == "the reply" and out.finish_reason == "end_turn"
    assert out.model == "claude-sonnet-4-20250514"
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.estimated) == (1000, 100, False)
    assert out.usage.cost == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)
    body = server.requests[0]
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 8192 and body["temperature"] == 0.2
    assert server.headers[0]["anthropic-version"]


def test_text_comes_from_text_blocks_after_thinking(server, make_backend):
    server.add_replies(AnthropicReply("final answer", thinking="secret chain of thought",
                                      redacted_thinking=True, text_blocks=3))
    out = make_backend().completion(MSGS, thinking={"type": "enabled", "budget_tokens": 1024})
    assert out.text == "final answer"
    assert server.requests[0]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_async_completion(server, make_backend):
    server.add_replies(AnthropicReply("async", thinking="t", prompt_tokens=7, completion_tokens=3))
    out = asyncio.run(make_backend().acompletion(MSGS, top_k=5))
    assert out.text == "async" and (out.usage.input_tokens, out.usage.output_tokens) == (7, 3)
    assert server.requests[0]["top_k"] == 5


def test_concurrent_async_calls(server, make_backend):
    server.latency = 0.05
    backend = make_backend()

    async def main():
        return await asyncio.gather(*[backend.acompletion(f"q{i}") for i in range(16)])

    t0 = time.perf_counter()
    assert [r.text for r in asyncio.run(main())] == [f"echo: q{i}" for i in range(16)]
    assert time.perf_counter() - t0 < 0.05 * 16  # overlapped, not one after another


def test_sampling_args_pass_through_with_openai_spellings(server, make_backend):
    make_backend().completion(MSGS, max_completion_tokens=50, stop="END", top_p=0.5,
                              metadata={"user_id": "u"}, temperature=None,
                              extra_headers={"anthropic-beta": "x"}, model="claude-3-haiku-20240307")
    body = server.requests[0]
    assert body["max_tokens"] == 50 and body["stop_sequences"] == ["END"] and body["top_p"] == 0.5
    assert body["metadata"] == {"user_id": "u"} and "temperature" not in body
    assert body["model"] == "claude-3-haiku-20240307"
    assert server.headers[0]["anthropic-beta"] == "x"


def test_max_tokens_defaults(server, make_backend):
    make_backend(model_name="claude-3-haiku-20240307").completion(MSGS)
    make_backend(max_tokens=123).completion(MSGS)
    make_backend().completion(MSGS, max_tokens=77)
    assert [r["max_tokens"] for r in server.requests] == [4096, 123, 77]


def test_cache_tokens_priced(server, make_backend):
    import json as _json
    body = {"id": "m", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 100, "cache_creation_input_tokens": 1000,
                      "cache_read_input_tokens": 10000, "output_tokens": 10}}
    server.inject(Fault("malformed", body=_json.dumps(body)))  # any 200 body the test wants
    out = make_backend(model_name="claude-3-5-haiku-20241022").completion(MSGS)
    assert out.usage.input_tokens == 11100
    assert out.usage.cost == pytest.approx((100 * 0.8 + 1000 * 0.8 * 1.25 + 10000 * 0.8 * 0.1 + 10 * 4) / 1e6)


def test_missing_usage_is_estimated_and_logged_once(server, make_backend, caplog):
    server.inject(Fault("no_usage"))
    server.inject(Fault("no_usage"))
    backend = make_backend()
    with caplog.at_level(logging.WARNING, logger="rlm_backend_anthropic"):
        first = backend.completion(MSGS)
        backend.completion(MSGS)
    assert first.usage.estimated
    assert first.usage.input_tokens == ceil4(len("Be brief.") + len("hello"))
    assert first.usage.output_tokens == ceil4(len("echo: hello"))
    assert first.usage.cost is not None  # priced from the estimate, so max_budget still works
    assert len([r for r in caplog.records if "estimated" in r.getMessage()]) == 1


def test_prices_kwarg_and_unknown_model(server, make_backend):
    server.add_replies(AnthropicReply("a", prompt_tokens=1_000_000, completion_tokens=0),
                       AnthropicReply("b", prompt_tokens=10, completion_tokens=10))
    assert make_backend(model_name="my-claude", prices={"my-claude": (2.0, 4.0)}).completion(MSGS).usage.cost == 2.0
    assert make_backend(model_name="unknown-model").completion(MSGS).usage.cost is None


def test_stream_refused(make_backend):
    with pytest.raises(ConfigurationError, match="stream"):
        make_backend().completion(MSGS, stream=True)


# --- keys ----------------------------------------------------------------------------------


def test_missing_key_names_both_fixes():
    with pytest.raises(AuthenticationError) as info:
        AnthropicBackend("claude-3-haiku-20240307")
    assert 'backend_kwargs={"api_key": ...}' in str(info.value)
    assert "ANTHROPIC_API_KEY" in str(info.value)


def test_key_from_env_and_base_url_env(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    server.api_key = SECRET
    with AnthropicBackend() as backend:
        assert backend.completion(MSGS).text == "echo: hello"
    sent = server.headers[0]
    assert SECRET in (sent.get("x-api-key") or "") + (sent.get("authorization") or "")


def test_dotenv_is_not_loaded_implicitly(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={SECRET}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AuthenticationError):
        AnthropicBackend()


def test_wrong_key_is_an_auth_error_not_retried(server, make_backend):
    server.api_key = "the-right-key"
    with pytest.raises(AuthenticationError) as info:
        make_backend(api_key=SECRET).completion(MSGS)
    assert len(server.requests) == 0 or len(server.requests) == 1
    assert info.value.status_code == 401 and "invalid x-api-key" in str(info.value)


def test_repr_masks_the_key(make_backend):
    # that the key never shows (repr, vars, DEBUG logs, errors quoting it) is the kit's
    # test_the_api_key_stays_hidden (test_anthropic_kit.py)
    assert "'***'" in repr(make_backend(api_key=SECRET))


# --- faults --------------------------------------------------------------------------------
# Retries (429 with Retry-After and its cap, 5xx, stalls, resets, the retry limit, async) are the
# kit's: TestAnthropicKit runs them (capability "retries"). What is Anthropic's own stays here.


def test_retries_send_the_sdk_retry_count(server, make_backend):
    server.inject(Fault("status", status=429, retry_after=0.01))
    assert make_backend().completion(MSGS).text == "echo: hello"
    assert server.headers[1]["x-stainless-retry-count"] == "1"


def test_overloaded_529_is_retried(server, make_backend):
    server.inject(Fault("status", status=529))
    assert make_backend().completion(MSGS).text == "echo: hello"
    assert len(server.requests) == 2


def test_overloaded_after_retries_is_a_server_error(server, make_backend):
    for _ in range(3):
        server.inject(Fault("status", status=529))
    with pytest.raises(ServerError, match="Overloaded") as info:
        make_backend(max_retries=2).completion(MSGS)
    assert info.value.status_code == 529 and "overloaded" in str(info.value)


def test_unreachable_server(make_backend):
    with AnthropicCompatibleServer() as gone:
        url = gone.base_url
    with pytest.raises(BackendConnectionError):
        make_backend(base_url=url, max_retries=0).completion(MSGS)


@pytest.mark.parametrize("body", ["<html>not json", '{"type": "message", "content": "nope"}', "[1]"])
def test_malformed_is_a_bad_response_not_retried(server, make_backend, body):
    server.inject(Fault("malformed", body=body))
    with pytest.raises(BadResponseError):
        make_backend().completion(MSGS)
    assert len(server.requests) == 1


def test_200_with_error_event(server, make_backend):
    server.inject(Fault("malformed", body='{"type": "error", "error": {"type": "overloaded_error", '
                                          '"message": "Overloaded"}}'))
    with pytest.raises(BadResponseError, match="Overloaded"):
        make_backend().completion(MSGS)


def test_context_window_exceeded(server, make_backend):
    server.inject(Fault("status", status=400, body="prompt is too long: 250000 tokens > 200000 maximum"))
    with pytest.raises(ContextWindowExceededError, match="prompt is too long"):
        make_backend().completion(MSGS)
    assert len(server.requests) == 1


def test_other_4xx(server, make_backend):
    server.inject(Fault("status", status=404, body="model: claude-nope"))
    with pytest.raises(BackendError) as info:
        make_backend().completion(MSGS)
    assert type(info.value) is BackendError and info.value.status_code == 404
    assert info.value.provider_message == "model: claude-nope"


def test_async_timeout_sampling_argument_sets_one_call(server, make_backend):
    backend = make_backend(max_retries=0)
    server.inject(Fault("stall", seconds=5))
    with pytest.raises(BackendTimeoutError):
        asyncio.run(backend.acompletion(MSGS, timeout=0.2))
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"


# --- lifecycle ----------------------------------------------------------------------------


def test_close_idempotent_and_reusable(server, make_backend):
    backend = make_backend()
    asyncio.run(backend.acompletion(MSGS))
    backend.completion(MSGS)
    backend.close()
    backend.close()
    assert backend.completion(MSGS).text == "echo: hello"
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"


def test_context_window_and_count_tokens(make_backend):
    backend = make_backend(context_windows={"mine": 1000})
    assert backend.context_window() == 200_000
    assert backend.context_window("mine") == 1000
    assert backend.context_window("unknown") is None
    assert backend.count_tokens(MSGS) == ceil4(len("Be brief.") + len("hello"))
