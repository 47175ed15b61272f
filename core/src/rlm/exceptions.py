"""Every exception rlm raises, importable from the top-level package.

Run-limit exceptions carry the best partial answer reached before the limit hit:
the ``answer["content"]`` the REPL had set so far, else the last model response.
"""

from __future__ import annotations

from typing import Any

from .status import RunStatus


class RLMError(Exception):
    """Base class of every rlm exception."""


# --- run limits (the five the spec names) -------------------------------------------------


class _LimitError(RLMError):
    partial_answer: str | None = None
    #: How a run that raised this ended (also in logs, the store and ``rlm run --json``).
    status: RunStatus = RunStatus.ERROR


class BudgetExceededError(_LimitError):
    """The run spent more than ``max_budget`` USD (children included)."""

    status = RunStatus.BUDGET

    def __init__(self, spent: float, budget: float, partial_answer: str | None = None,
                 message: str | None = None):
        self.spent = spent
        self.budget = budget
        self.partial_answer = partial_answer
        super().__init__(message or f"Budget exceeded: spent ${spent:.6f} of ${budget:.6f} budget")


class TimeoutExceededError(_LimitError):
    """The run took longer than ``max_timeout`` seconds."""

    status = RunStatus.TIMEOUT

    def __init__(self, elapsed: float, timeout: float, partial_answer: str | None = None,
                 message: str | None = None):
        self.elapsed = elapsed
        self.timeout = timeout
        self.partial_answer = partial_answer
        super().__init__(message or f"Timeout exceeded: {elapsed:.1f}s of {timeout:.1f}s limit")


class TokenLimitExceededError(_LimitError):
    """The run used more than ``max_tokens`` input plus output tokens."""

    status = RunStatus.TOKENS

    def __init__(self, tokens_used: int, token_limit: int, partial_answer: str | None = None,
                 message: str | None = None):
        self.tokens_used = tokens_used
        self.token_limit = token_limit
        self.partial_answer = partial_answer
        super().__init__(message or f"Token limit exceeded: {tokens_used:,} of {token_limit:,} tokens")


class ErrorThresholdExceededError(_LimitError):
    """``max_errors`` consecutive turns ended with a failing REPL cell."""

    status = RunStatus.ERRORS

    def __init__(self, error_count: int, threshold: int, last_error: str | None = None,
                 partial_answer: str | None = None, message: str | None = None):
        self.error_count = error_count
        self.threshold = threshold
        self.last_error = last_error
        self.partial_answer = partial_answer
        super().__init__(
            message or f"Error threshold exceeded: {error_count} consecutive errors (limit: {threshold})"
        )


class CancellationError(_LimitError):
    """The run was cancelled (``KeyboardInterrupt``)."""

    status = RunStatus.CANCELLED

    def __init__(self, partial_answer: str | None = None, message: str | None = None):
        self.partial_answer = partial_answer
        super().__init__(message or "Execution cancelled by user")


# --- configuration and plugins ----------------------------------------------------------


class ConfigurationError(RLMError, ValueError):
    """A constructor argument or setting is invalid. The message names the fix."""


class PluginError(RLMError):
    """A plugin failed to load, register or construct. The message names the distribution."""

    def __init__(self, message: str, *, distribution: str | None = None, plugin: str | None = None):
        self.distribution = distribution
        self.plugin = plugin
        super().__init__(message)


class UnknownPluginError(ConfigurationError, LookupError):
    """A backend, environment or other plugin name that nothing installed registers."""

    def __init__(self, kind: str, name: str, available: list[str], hint: str | None = None,
                 plural: str | None = None):
        self.kind = kind
        self.name = name
        self.available = available
        listing = ", ".join(sorted(available)) or "none"
        msg = f"Unknown {kind} {name!r}. Installed {plural or kind + 's'}: {listing}."
        if hint:
            msg += " " + hint
        super().__init__(msg)


# --- model calls --------------------------------------------------------------------------


class BackendError(RLMError):
    """A model call failed. ``provider_message`` holds the provider's own words."""

    retryable: bool = False

    def __init__(self, message: str, *, backend: str | None = None, model: str | None = None,
                 status_code: int | None = None, provider_message: str | None = None):
        self.backend = backend
        self.model = model
        self.status_code = status_code
        self.provider_message = provider_message
        super().__init__(message)


class AuthenticationError(BackendError):
    """The provider refused the credentials, or none were given."""


class RateLimitError(BackendError):
    """HTTP 429 from the provider (after the backend's own retries)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class BackendTimeoutError(BackendError):
    """The provider did not answer within the request timeout."""

    retryable = True


class BackendConnectionError(BackendError):
    """The provider could not be reached, or the connection was reset."""

    retryable = True


class ServerError(BackendError):
    """HTTP 5xx from the provider (after retries)."""

    retryable = True


class BadResponseError(BackendError):
    """The provider answered with something that is not a valid response."""


class ContextWindowExceededError(BackendError):
    """The prompt does not fit the model's context window."""


class RLMEnvironmentError(RLMError):
    """An execution environment failed to start or died (named so it does not shadow the builtin)."""




__all__ = [
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "BadResponseError",
    "BudgetExceededError",
    "CancellationError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "ErrorThresholdExceededError",
    "PluginError",
    "RLMEnvironmentError",
    "RLMError",
    "RateLimitError",
    "ServerError",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "UnknownPluginError",
]
