"""rlm.plugin's shared backend support: retry policy, status mapping, prices, secrets, usage."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm.exceptions import (AuthenticationError, BackendError, BackendTimeoutError,
                            ConfigurationError, ContextWindowExceededError, RateLimitError,
                            ServerError)
from rlm_backend_support import (PriceTable, RetryPolicy, Secret, error_for_status,
    estimated_usage, lookup_model, missing_key_error, redact, register_prices)


@given(st.integers(0, 40), st.floats(0, 10), st.floats(0, 100))
def test_backoff_is_bounded_and_jittered(attempt, base, cap):
    policy = RetryPolicy(3, base, cap)
    delay = policy.delay(ServerError("x"), attempt)
    full = min(base * 2 ** attempt, cap)
    assert full * 0.5 - 1e-9 <= delay <= full + 1e-9


@given(st.floats(0, 1e6), st.floats(0, 100))
def test_retry_after_wins_but_is_capped(retry_after, cap):
    assert RetryPolicy(3, 0.5, cap).delay(RateLimitError("x", retry_after=retry_after), 0) == min(retry_after, cap)


def test_retry_loop_counts_attempts_and_raises_the_last_error():
    calls = []

    def attempt(n):
        calls.append(n)
        raise OSError("reset")

    def classify(exc, n):
        return ServerError(f"attempt {n}")

    with pytest.raises(ServerError, match="attempt 2"):
        RetryPolicy(2, 0.0, 0.0).call(attempt, classify)
    assert calls == [0, 1, 2]
    with pytest.raises(AuthenticationError):  # not retryable: one attempt
        RetryPolicy(5, 0.0, 0.0).call(lambda n: calls.append(n) or (_ for _ in ()).throw(OSError()),
                                      lambda e, n: AuthenticationError("no"))


@pytest.mark.parametrize("kw", [{"max_retries": -1}, {"max_retries": True}, {"base_delay": -1},
                                {"max_delay": float("inf")}])
def test_bad_policy_is_a_configuration_error(kw):
    with pytest.raises(ConfigurationError, match="mybackend"):
        RetryPolicy(**{"max_retries": 1, **kw}, name="mybackend")


@pytest.mark.parametrize("status,cls,retryable", [
    (401, AuthenticationError, False), (403, AuthenticationError, False), (429, RateLimitError, True),
    (408, BackendTimeoutError, True), (500, ServerError, True), (529, ServerError, True),
    (404, BackendError, False)])
def test_status_mapping(status, cls, retryable):
    err = error_for_status(status, "provider says no", backend="b", model="m", key_env="B_KEY")
    assert type(err) is cls and err.retryable is retryable
    assert err.provider_message == "provider says no" and "provider says no" in str(err)
    if status == 401:
        assert "B_KEY" in str(err)


def test_context_and_quota_detection():
    assert isinstance(error_for_status(400, "prompt is too long: 300000 tokens", backend="b"),
                      ContextWindowExceededError)
    quota = error_for_status(429, "out of quota", backend="b", code="insufficient_quota")
    assert isinstance(quota, RateLimitError) and not quota.retryable


def test_price_table_layers():
    table = PriceTable({"m": (1.0, 2.0)}, {"mine": (3.0, 4.0)})
    assert table.cost("m-2024-01-01", 1_000_000, 1_000_000) == 3.0
    assert table.cost("provider/mine", 1_000_000, 0) == 3.0
    assert table.cost("unknown", 1, 1) is None
    register_prices({"registered-model-xyz": (5, 6)})
    assert table.cost("registered-model-xyz", 1_000_000, 0) == 5.0
    with pytest.raises(ConfigurationError):
        PriceTable({}, {"bad": (1,)})
    with pytest.raises(ConfigurationError):
        register_prices({"neg": (-1, 1)})


@given(st.text(min_size=1, max_size=20), st.text(max_size=20).filter(lambda s: "/" not in s))
def test_lookup_strips_prefixes_and_dates(name, suffix):
    table = {name: 1}
    assert lookup_model(table, name) == 1
    if "/" not in name:
        assert lookup_model(table, f"provider/{name}") == 1
        assert lookup_model(table, f"@p/{name}-{suffix}") == 1


def test_secrets_never_show():
    secret = Secret("sk-abcdef123456")
    assert repr(secret) == "'***'" and str(secret) == "'***'" and "abc" not in repr([secret])
    assert not Secret(None) and repr(Secret("")) == "None"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert redact("key sk-abcdef123456 leaked", secret) == "key *** leaked"
    assert redact("abc", "ab") == "abc"  # too short to mask safely
    err = missing_key_error("foo", "FOO_API_KEY")
    assert 'backend_kwargs={"api_key": ...}' in str(err) and "FOO_API_KEY" in str(err)


def test_estimated_usage():
    usage = estimated_usage([{"role": "user", "content": "a" * 9}], "b" * 5, extra_input_chars=3)
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (3, 2, True)


def test_client_pool_closes_a_loops_client_when_the_loop_shuts_down() -> None:
    """asyncio.run() closes its loop at the end: the pool's client of that loop is closed with
    it (awaited, before the loop closes), not left holding connections until garbage collection."""
    import asyncio

    from rlm_backend_support import ClientPool

    class AsyncClient:
        def __init__(self) -> None:
            self.closed = 0

        async def close(self) -> None:
            self.closed += 1

    made: list[AsyncClient] = []

    def make_async() -> AsyncClient:
        made.append(AsyncClient())
        return made[-1]

    pool = ClientPool(lambda: None, make_async)

    async def use() -> None:
        assert pool.async_() is pool.async_()  # one client per loop

    asyncio.run(use())
    asyncio.run(use())
    assert [c.closed for c in made] == [1, 1]
    pool.close()  # after the loops are gone: nothing left to close, nothing raised
    assert len(pool.async_clients) <= 1
