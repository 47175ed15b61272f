"""Everything a plugin author imports: the hook marker, the registrar, the protocols, the types.

    from rlm.plugin import hookimpl

    @hookimpl
    def rlm_register_backends(registrar):
        registrar.add("mybackend", "my_pkg.client:MyBackend", description="...")

See ``docs/plugins.md`` for every hook.
"""

from __future__ import annotations

from ._backend_support import (ANTHROPIC_PRICES, DEFAULT_PRICES, OPENAI_PRICES, ClientPool,
                               PriceTable, RetryPolicy, Secret, as_int, check_sdk_kwargs, content_chars, error_for_status, error_message_of,
                               estimate_token_count, estimated_usage, lookup_model,
                               missing_key_error, parse_retry_after, redact, register_prices,
                               reported_cost)
from ._base import BaseBackend, estimate_tokens
from ._hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from ._registrar import PluginEntry, Registrar
from .exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                         BackendTimeoutError, BadResponseError, ConfigurationError,
                         ContextWindowExceededError, PluginError, RateLimitError,
                         RLMEnvironmentError, ServerError)
from .protocols import (Backend, CompactionStrategy, Environment, Executor, ExecutorRun, Host,
                        LoggerSink, ToolProvider)
from .types import (CellResult, EnvironmentCapabilities, Message, ModelResponse, Tool, Usage)

__all__ = [
    "ENTRY_POINT_GROUP", "check_sdk_kwargs", "AuthenticationError", "Backend", "BaseBackend", "estimate_tokens", "BackendConnectionError",
    "BackendError", "BackendTimeoutError", "BadResponseError", "CellResult", "CompactionStrategy",
    "ConfigurationError", "ContextWindowExceededError", "Environment", "EnvironmentCapabilities",
    "Executor", "ExecutorRun",
    "Host", "LoggerSink", "Message", "ModelResponse", "PluginEntry", "PluginError",
    "RLMEnvironmentError", "RateLimitError", "Registrar", "ServerError", "Tool", "ToolProvider",
    "Usage", "hookimpl", "hookspec",
    # backend support (rlm._backend_support): retries, error mapping, prices, secrets, usage
    "ANTHROPIC_PRICES", "ClientPool", "DEFAULT_PRICES", "OPENAI_PRICES", "PriceTable",
    "RetryPolicy", "Secret", "as_int", "content_chars",
    "error_for_status", "error_message_of", "estimate_token_count", "estimated_usage",
    "lookup_model", "missing_key_error", "parse_retry_after", "redact", "register_prices",
    "reported_cost",
]
