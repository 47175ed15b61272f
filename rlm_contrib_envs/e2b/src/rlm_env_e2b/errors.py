"""What a user can act on when E2B says no: missing or rejected credentials, quota and rate
limits, the service or the network failing, a sandbox that is gone. The provider's own message is
always quoted.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError

DASHBOARD = "https://e2b.dev/dashboard?tab=keys"
KEY_HELP = (f"Get a key from the E2B dashboard ({DASHBOARD}) or with the E2B CLI (`npm i -g @e2b/cli` "
            "then `e2b auth login`), then `export E2B_API_KEY=e2b_...` (or pass "
            "environment_kwargs={'api_key': ...}).")


def resolve_api_key(api_key: str | None) -> str:
    """The key to use: the explicit one, else ``E2B_API_KEY``; a clear error when neither is set."""
    if api_key is not None and not isinstance(api_key, str):
        raise ConfigurationError(f"api_key must be a string, not {type(api_key).__name__}")
    key = api_key or os.environ.get("E2B_API_KEY", "")
    if not key.strip():
        raise ConfigurationError("the 'e2b' environment needs an E2B API key and none was "
                                 "found: E2B_API_KEY is not set. " + KEY_HELP)
    return key.strip()


def sdk() -> Any:
    """The E2B SDK modules ``(e2b, e2b_code_interpreter)``, imported on first use."""
    try:
        import e2b
        import e2b_code_interpreter
    except ImportError as exc:
        raise RLMEnvironmentError(
            f"the 'e2b' environment needs the E2B SDK, which cannot be imported ({exc}): "
            "pip install rlm-env-e2b (it depends on e2b-code-interpreter)") from exc
    return e2b, e2b_code_interpreter


def provider_error(what: str, exc: BaseException, where: str) -> Exception:
    """Turn an exception of the E2B SDK (or of its HTTP stack) into one that says what failed,
    quotes the provider, and names the fix."""
    e2b, _ = sdk()
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    if isinstance(exc, e2b.AuthenticationException):
        return ConfigurationError(f"E2B rejected the credentials while trying to {what}: {text}. "
                                  "Check E2B_API_KEY. " + KEY_HELP)
    if isinstance(exc, e2b.RateLimitException):
        return RLMEnvironmentError(
            f"E2B refused to {what}: rate limit or quota reached. E2B said: {text}. Wait and "
            "retry, lower the number of sandboxes running at once (max_concurrent_subcalls, "
            "batch parallelism), or raise your plan's limits on the E2B dashboard.")
    if isinstance(exc, getattr(e2b, "SandboxNotRunningException", ())) or (
            isinstance(exc, getattr(e2b, "NotFoundException", ())) and "sandbox" in text.lower()):
        return RLMEnvironmentError(f"the E2B sandbox is no longer running (killed, or its "
                                   f"timeout passed) and could not {what}. E2B said: {text}")
    if isinstance(exc, getattr(e2b, "TimeoutException", ())):
        return RLMEnvironmentError(f"E2B did not answer in time while trying to {what} "
                                   f"({where}). E2B said: {text}. Raise "
                                   "environment_kwargs['request_timeout'] or retry later.")
    if isinstance(exc, getattr(e2b, "SandboxException", ())):
        return RLMEnvironmentError(f"E2B could not {what}. E2B said: {text}")
    # httpx / pyqwest / OS errors: the service could not be reached at all
    return RLMEnvironmentError(f"could not reach E2B ({where}) to {what}: "
                               f"{type(exc).__name__}: {text}. Check the network connection "
                               "and https://status.e2b.dev, then retry.")
