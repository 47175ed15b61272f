"""The gemini backend through the real google-genai SDK against rlm_testkit.servers.GeminiEmulator
(real HTTP on 127.0.0.1)."""

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
                            ContextWindowExceededError, RateLimitError, ServerError)
from rlm_testkit.servers import Fault, GeminiEmulator, GeminiReply
from rlm_backend_gemini.client import GeminiBackend, to_contents

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
SECRET = "AIzaSy-test-SECRET-0123456789"


def ceil4(n: int) -> int:
    return max(1, math.ceil(n / 4))


# --- plugin --------------------------------------------------------------------------------


def test_entry_point_registered():
    import rlm

    entry = rlm.PluginManager().entry("backend", "gemini")
    assert entry.distribution == "rlm-backend-gemini"
    assert entry.load() is GeminiBackend


# --- message translation -------------------------------------------------------------------


def test_system_becomes_the_instruction_and_roles_map():
    system, contents = to_contents([
        {"role": "system", "content": "A"}, {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a1"},
        {"role": "developer", "content": "B"}, {"role": "tool", "content": "t"}])
    assert system == "A\n\nB"
    assert contents == [{"role": "user", "parts": [{"text": "u1"}, {"text": "u2"}]},
                        {"role": "model", "parts": [{"text": "a1"}]},
                        {"role": "user", "parts": [{"text": "t"}]}]


def test_only_a_system_message_becomes_the_user_message():
    assert to_contents([{"role": "system", "content": "just this"}]) == (
        None, [{"role": "user", "parts": [{"text": "just this"}]}])


def test_openai_content_parts_and_images():
    system, contents = to_contents([{"role": "user", "content": [
        {"type": "text", "text": "look:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}])
    assert contents[0]["parts"] == [{"text": "look:"},
                                    {"inline_data": {"mime_type": "image/png", "data": "aGVsbG8="}}]


_roles = st.sampled_from(["system", "user", "assistant"])
_texts = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_roles, _texts), min_size=1, max_size=12))
def test_translation_properties(pairs):
    system, contents = to_contents([{"role": r, "content": t} for r, t in pairs])
    assert contents, "contents must not be empty"
    assert all(c["role"] in ("user", "model") and c["parts"] for c in contents)
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(contents))
    if any(r != "system" for r, _ in pairs):
        # every non-system text, in order, one part each; the system texts in the instruction
        assert [p["text"] for c in contents for p in c["parts"]] == [t for r, t in pairs if r != "system"]
        sys_texts = [t for r, t in pairs if r == "system"]
        assert system == ("\n\n".join(sys_texts) if sys_texts else None)


# --- calls, usage, cost ----------------------------------------------------------------------


def test_sync_completion_request_usage_and_cost(emu, make_backend):
    emu.add_replies(GeminiReply("the reply", prompt_tokens=1000, completion_tokens=100))
    out = make_backend(api_key=SECRET).completion(MSGS, temperature=0.2, max_tokens=50, stop="END",
                                                  top_k=3)
    assert out.text == "the reply" and out.finish_reason == "STOP"
    assert out.model == "gemini-2.5-flash"
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.estimated) == (1000, 100, False)
    assert out.usage.cost == pytest.approx((1000 * 0.30 + 100 * 2.50) / 1e6)
    body = emu.requests[0]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50,
                                        "stopSequences": ["END"], "topK": 3}
    assert emu.paths[0].endswith("/models/gemini-2.5-flash:generateContent")
    assert emu.headers[0]["x-goog-api-key"] == SECRET


def test_thoughts_stay_out_of_the_answer_and_are_billed_as_output(emu, make_backend):
    emu.add_replies(GeminiReply("final answer", thoughts="secret chain of thought", text_parts=3,
                                prompt_tokens=10, completion_tokens=5, thoughts_tokens=40))
    out = make_backend(model_name="gemini-2.5-pro").completion(
        MSGS, thinking_config={"include_thoughts": True, "thinking_budget": 1024})
    assert out.text == "final answer"
    assert out.usage.output_tokens == 45
    assert out.usage.cost == pytest.approx((10 * 1.25 + 45 * 10.0) / 1e6)
    sent = emu.requests[0]["generationConfig"]["thinkingConfig"]
    # proto3 JSON: the API reads lowerCamel and snake_case names alike (the SDK sends these)
    assert {k.replace("_", "").lower(): v for k, v in sent.items()} == {"includethoughts": True,
                                                                       "thinkingbudget": 1024}


def test_long_prompts_use_the_long_context_price(emu, make_backend):
    emu.add_replies(GeminiReply("a", prompt_tokens=200_000, completion_tokens=1000),
                    GeminiReply("b", prompt_tokens=200_001, completion_tokens=1000))
    backend = make_backend(model_name="gemini-2.5-pro-preview-06-05")
    assert backend.completion(MSGS).usage.cost == pytest.approx((200_000 * 1.25 + 1000 * 10) / 1e6)
    assert backend.completion(MSGS).usage.cost == pytest.approx((200_001 * 2.50 + 1000 * 15) / 1e6)


def test_cached_tokens_are_priced_at_the_cache_rate(emu, make_backend):
    emu.add_replies(GeminiReply("ok", prompt_tokens=10_000, completion_tokens=10, cached_tokens=8_000))
    out = make_backend(model_name="gemini-2.5-flash").completion(MSGS)
    assert out.usage.input_tokens == 10_000
    assert out.usage.cost == pytest.approx((2_000 * 0.30 + 8_000 * 0.30 * 0.10 + 10 * 2.50) / 1e6)


def test_prices_kwarg_and_unknown_model(emu, make_backend):
    emu.add_replies(GeminiReply("a", prompt_tokens=1_000_000, completion_tokens=0),
                    GeminiReply("b", prompt_tokens=300_000, completion_tokens=0),
                    GeminiReply("c", prompt_tokens=10, completion_tokens=10))
    assert make_backend(model_name="my-gemini", prices={"my-gemini": (2.0, 4.0)}).completion(MSGS).usage.cost == 2.0
    # a price you set is used as is: no long-context tier on top of it
    mine = make_backend(model_name="gemini-2.5-pro", prices={"gemini-2.5-pro": (1.0, 1.0)})
    assert mine.completion(MSGS).usage.cost == pytest.approx(0.3)
    assert make_backend(model_name="unknown-model").completion(MSGS).usage.cost is None


def test_missing_usage_is_estimated_and_logged_once(emu, make_backend, caplog):
    emu.inject(Fault("no_usage"))
    emu.inject(Fault("no_usage"))
    backend = make_backend()
    with caplog.at_level(logging.WARNING, logger="rlm_backend_gemini"):
        first = backend.completion(MSGS)
        backend.completion(MSGS)
    assert first.usage.estimated
    assert first.usage.input_tokens == ceil4(len("Be brief.") + len("hello"))
    assert first.usage.output_tokens == ceil4(len("echo: hello"))
    assert first.usage.cost is not None
    assert len([r for r in caplog.records if "estimated" in r.getMessage()]) == 1


def test_zero_counts_left_out_are_zero_not_estimated(emu, make_backend):
    emu.add_replies(GeminiReply("", prompt_tokens=0, completion_tokens=0))
    usage = make_backend().completion(MSGS).usage
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (0, 0, False)


def test_async_completion(emu, make_backend):
    emu.add_replies(GeminiReply("async", thoughts="t", prompt_tokens=7, completion_tokens=3,
                                thoughts_tokens=0))
    out = asyncio.run(make_backend().acompletion(MSGS, top_p=0.5))
    assert out.text == "async" and (out.usage.input_tokens, out.usage.output_tokens) == (7, 3)
    assert emu.requests[0]["generationConfig"] == {"topP": 0.5}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_is_assembled_into_one_reply(emu, make_backend, mode):
    text = "a streamed answer long enough to arrive in several server-sent events"
    emu.add_replies(GeminiReply(text, thoughts="hidden", prompt_tokens=12, completion_tokens=34,
                                thoughts_tokens=6))
    backend = make_backend()
    out = (backend.completion(MSGS, stream=True) if mode == "sync"
           else asyncio.run(backend.acompletion(MSGS, stream=True)))
    assert out.text == text and out.finish_reason == "STOP"
    assert (out.usage.input_tokens, out.usage.output_tokens) == (12, 40)
    assert ":streamGenerateContent" in emu.paths[0] and "alt=sse" in emu.paths[0]


def test_concurrent_async_calls(emu, make_backend):
    emu.latency = 0.05
    backend = make_backend()

    async def main():
        return await asyncio.gather(*[backend.acompletion(f"q{i}") for i in range(16)])

    t0 = time.perf_counter()
    assert [r.text for r in asyncio.run(main())] == [f"echo: q{i}" for i in range(16)]
    assert time.perf_counter() - t0 < 0.05 * 16


def test_model_sampling_argument_and_models_prefix(emu, make_backend):
    make_backend(model_name="models/gemini-2.0-flash").completion(MSGS)
    make_backend().completion(MSGS, model="gemini-2.5-flash-lite")
    assert emu.paths[0].endswith("/models/gemini-2.0-flash:generateContent")
    assert emu.paths[1].endswith("/models/gemini-2.5-flash-lite:generateContent")


def test_unknown_sampling_argument_is_refused_before_any_request(emu, make_backend):
    with pytest.raises(ConfigurationError, match="logit_bias.*sampling_args"):
        make_backend().completion(MSGS, logit_bias={"1": 2})
    assert emu.requests == []


def test_blocked_prompt_is_a_bad_response_naming_the_reason(emu, make_backend):
    emu.add_replies(GeminiReply("", block_reason="SAFETY"))
    with pytest.raises(BadResponseError, match="blocked.*SAFETY.*safety_settings"):
        make_backend().completion(MSGS)


# --- keys ----------------------------------------------------------------------------------


def test_missing_key_names_both_fixes():
    with pytest.raises(AuthenticationError) as info:
        GeminiBackend("gemini-2.5-flash")
    text = str(info.value)
    assert 'backend_kwargs={"api_key": ...}' in text and "GEMINI_API_KEY" in text
    assert "GOOGLE_API_KEY" in text


@pytest.mark.parametrize("var", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_key_and_base_url_from_env(var, emu, monkeypatch):
    monkeypatch.setenv(var, SECRET)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url)
    emu.api_key = SECRET
    with GeminiBackend() as backend:
        assert backend.completion(MSGS).text == "echo: hello"
    assert emu.headers[0]["x-goog-api-key"] == SECRET


def test_wrong_key_is_an_auth_error_not_retried(emu, make_backend):
    emu.api_key = "the-right-key"
    with pytest.raises(AuthenticationError) as info:
        make_backend(api_key=SECRET).completion(MSGS)
    assert info.value.status_code == 400 and "API key not valid" in str(info.value)
    assert "GEMINI_API_KEY" in str(info.value)


def test_a_403_quoting_the_key_hides_it(emu, make_backend):
    # that the key never shows (repr, vars, DEBUG logs, 400 and 5xx errors quoting it) is the
    # kit's test_the_api_key_stays_hidden (test_gemini_kit.py)
    backend = make_backend(api_key=SECRET)
    assert "'***'" in repr(backend)
    emu.inject(Fault("status", status=403, body=f"key {SECRET} is not allowed"))
    with pytest.raises(AuthenticationError) as info:
        backend.completion(MSGS)
    assert SECRET not in str(info.value) and SECRET not in (info.value.provider_message or "")


# --- faults --------------------------------------------------------------------------------
# Retries (429 with its RetryInfo delay and the cap on it, 5xx, stalls, resets, the retry limit,
# async) are the kit's: TestGeminiKit runs them (capability "retries"). What is Gemini's own
# (a Retry-After header instead of RetryInfo, the 504, the messages) stays here.


def test_retry_after_header_is_honoured_too(emu, make_backend):
    emu.inject(Fault("status", status=429, body={"error": {"code": 429, "message": "slow down",
                                                           "status": "RESOURCE_EXHAUSTED"}},
                     retry_after=0.3))
    t0 = time.perf_counter()
    assert make_backend(retry_base_delay=0.0).completion(MSGS).text == "echo: hello"
    assert time.perf_counter() - t0 >= 0.28


def test_rate_limit_message_names_the_quota_and_the_attempts(emu, make_backend):
    for _ in range(3):
        emu.inject(Fault("status", status=429, retry_after=0.01))
    with pytest.raises(RateLimitError) as info:
        make_backend(max_retries=2).completion(MSGS)
    assert "Resource has been exhausted" in str(info.value) and "after 3 attempts" in str(info.value)


def test_504_is_retried(emu, make_backend):
    emu.inject(Fault("status", status=504))
    assert make_backend().completion(MSGS).text == "echo: hello"
    assert len(emu.requests) == 2


def test_overloaded_after_retries_is_a_server_error(emu, make_backend):
    for _ in range(3):
        emu.inject(Fault("status", status=503))
    with pytest.raises(ServerError, match="overloaded") as info:
        make_backend(max_retries=2).completion(MSGS)
    assert info.value.status_code == 503


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_timeout_sampling_argument_sets_one_call(emu, make_backend, mode):
    backend = make_backend(timeout=30, max_retries=0)
    call = (backend.completion if mode == "sync"
            else lambda m, **kw: asyncio.run(backend.acompletion(m, **kw)))
    emu.inject(Fault("stall", seconds=5))
    t0 = time.perf_counter()
    with pytest.raises(BackendTimeoutError, match=r"\(0.3 s\)"):
        call(MSGS, timeout=0.3)
    assert time.perf_counter() - t0 < 2
    assert call(MSGS).text == "echo: hello"


def test_unreachable_server(make_backend):
    with GeminiEmulator() as gone:
        url = gone.base_url
    with pytest.raises(BackendConnectionError, match="could not reach"):
        make_backend(base_url=url, max_retries=0).completion(MSGS)


@pytest.mark.parametrize("body", ["<html>not json", "[1]", '{"candidates": "nope"}', "{}"])
def test_malformed_is_a_bad_response_not_retried(emu, make_backend, body):
    emu.inject(Fault("malformed", body=body))
    with pytest.raises(BadResponseError):
        make_backend().completion(MSGS)
    assert len(emu.requests) == 1


def test_context_window_exceeded(emu, make_backend):
    emu.inject(Fault("status", status=400, body="The input token count (2000000) exceeds the maximum "
                                                "number of tokens allowed (1048576)."))
    with pytest.raises(ContextWindowExceededError, match="exceeds the maximum"):
        make_backend().completion(MSGS)
    assert len(emu.requests) == 1


def test_other_4xx(emu, make_backend):
    emu.inject(Fault("status", status=404, body="models/gemini-nope is not found"))
    with pytest.raises(BackendError) as info:
        make_backend().completion(MSGS)
    assert type(info.value) is BackendError and info.value.status_code == 404
    assert info.value.provider_message == "models/gemini-nope is not found"


def test_the_emulator_refuses_what_the_api_refuses(emu, make_backend):
    with pytest.raises(BackendError, match="Unknown name"):
        make_backend().completion(MSGS, extra_body={"generationConfig": {"bogus": 1}})


# --- lifecycle and counting ---------------------------------------------------------------


def test_close_idempotent_and_reusable(emu, make_backend):
    backend = make_backend()
    asyncio.run(backend.acompletion(MSGS))
    backend.completion(MSGS)
    backend.close()
    backend.close()
    assert backend.completion(MSGS).text == "echo: hello"
    assert asyncio.run(backend.acompletion(MSGS)).text == "echo: hello"


def test_context_window_and_estimated_count(make_backend, emu):
    backend = make_backend(context_windows={"mine": 1000})
    assert backend.context_window() == 1_048_576
    assert backend.context_window("gemini-1.5-pro-002") == 2_097_152
    assert backend.context_window("mine") == 1000
    assert backend.context_window("unknown") is None
    assert backend.count_tokens(MSGS) == ceil4(len("Be brief.") + len("hello"))
    assert emu.count_requests == []


def test_exact_count_asks_count_tokens(make_backend, emu):
    backend = make_backend(exact_token_count=True)
    assert backend.count_tokens(MSGS) == ceil4(len("Be brief.") + len("hello"))
    assert emu.count_requests[0]["contents"] == [
        {"role": "user", "parts": [{"text": "Be brief."}]},
        {"role": "user", "parts": [{"text": "hello"}]}]
