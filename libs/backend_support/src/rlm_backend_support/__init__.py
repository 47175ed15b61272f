"""What every model backend needs, in one place: retries, error mapping, prices, secrets, usage.

    from rlm_backend_support import RetryPolicy, error_for_status, estimated_usage

The definitions are in :mod:`rlm_backend_support._support`; this module is the public facade.
"""

from __future__ import annotations

from ._support import (ANTHROPIC_PRICES, DEFAULT_PRICES, OPENAI_PRICES, ClientPool, PooledBackend,
                       PriceTable,
                       RetryPolicy, Secret, as_int, check_sdk_kwargs, content_chars,
                       error_for_status, error_message_of, estimate_token_count, estimated_usage,
                       lookup_model, missing_key_error, parse_retry_after, redact, register_prices,
                       reported_cost)

__all__ = [
    "ANTHROPIC_PRICES", "ClientPool", "DEFAULT_PRICES", "OPENAI_PRICES", "PooledBackend",
    "PriceTable", "RetryPolicy",
    "Secret", "as_int", "check_sdk_kwargs", "content_chars", "error_for_status", "error_message_of",
    "estimate_token_count", "estimated_usage", "lookup_model", "missing_key_error",
    "parse_retry_after", "redact", "register_prices", "reported_cost",
]
