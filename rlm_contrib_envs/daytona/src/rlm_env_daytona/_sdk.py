"""The Daytona SDK, imported only when a sandbox is needed, and its errors turned into rlm's.

Every SDK call of the environment goes through :func:`call`, so a user always gets one of two
errors with the provider's own message in it: :class:`~rlm.exceptions.ConfigurationError` (the
credentials or settings are wrong: fix them) or :class:`~rlm.exceptions.RLMEnvironmentError`
(the service refused or failed: quota, rate limit, outage, network).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from rlm.exceptions import ConfigurationError, RLMEnvironmentError

T = TypeVar("T")
DEFAULT_API_URL = "https://app.daytona.io/api"
CREDENTIALS_HELP = (
    "Set DAYTONA_API_KEY to an API key (create one in the Daytona dashboard under Keys, "
    "https://app.daytona.io/dashboard/keys, or log in with the Daytona CLI: `daytona login`), "
    "and DAYTONA_API_URL (default " + DEFAULT_API_URL + ") and DAYTONA_TARGET (the region, "
    "e.g. 'us') when yours differ; or pass environment_kwargs={'api_key': ..., 'api_url': ..., "
    "'target': ...}.")


def sdk() -> Any:
    """The ``daytona`` module, or a :class:`ConfigurationError` that says how to install it."""
    try:
        import daytona
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigurationError("the 'daytona' environment needs the Daytona SDK: "
                                 "pip install rlm-env-daytona (or pip install daytona)") from exc
    return daytona


def resolve_api_url(api_url: str | None) -> str:
    """The API URL: given, else ``DAYTONA_API_URL`` from the process environment (never from a
    ``.env`` file: it decides where the key is sent), else Daytona's."""
    return api_url or os.environ.get("DAYTONA_API_URL") or DEFAULT_API_URL


def client(api_key: str | None, api_url: str | None, target: str | None) -> Any:
    """A ``daytona.Daytona`` client; missing credentials raise :class:`ConfigurationError`.

    The SDK finds what is not given here in ``DAYTONA_*`` variables (and the key in a ``.env``
    file of the working directory); only when it finds no key at all is the error raised.
    """
    daytona = sdk()
    config = daytona.DaytonaConfig(api_key=api_key, api_url=resolve_api_url(api_url),
                                   target=target)
    try:
        return daytona.Daytona(config)
    except daytona.DaytonaAuthenticationError as exc:
        raise ConfigurationError(f"the 'daytona' environment has no Daytona credentials "
                                 f"({exc}). " + CREDENTIALS_HELP) from exc
    except daytona.DaytonaError as exc:
        raise translate(exc, "connecting to Daytona", api_url) from exc


def translate(exc: BaseException, action: str, api_url: str | None = None) -> Exception:
    """The rlm error for an SDK error raised while doing ``action``."""
    daytona = sdk()
    where = resolve_api_url(api_url)
    message = str(exc).strip() or type(exc).__name__
    status = getattr(exc, "status_code", None)
    said = f"Daytona said: {message}" + (f" (HTTP {status})" if status else "")
    if isinstance(exc, daytona.DaytonaAuthenticationError):
        return ConfigurationError(f"Daytona rejected the credentials while {action}. {said}. "
                                  + CREDENTIALS_HELP)
    if isinstance(exc, daytona.DaytonaRateLimitError):
        return RLMEnvironmentError(
            f"Daytona is rate-limiting this account while {action}. {said}. Wait and retry, "
            "or run fewer sandboxes at once.")
    if isinstance(exc, daytona.DaytonaForbiddenError):
        return RLMEnvironmentError(
            f"Daytona refused {action}. {said}. This is usually the organisation's quota "
            "(sandboxes, CPU, memory or disk in use): delete unused sandboxes in the dashboard, "
            "ask for smaller resources, or raise the quota.")
    if isinstance(exc, daytona.DaytonaConnectionError) or _network_failure(exc):
        return RLMEnvironmentError(
            f"cannot reach the Daytona API at {where} while {action}: {message}. Check the "
            "network, a proxy, and DAYTONA_API_URL.")
    if isinstance(exc, daytona.DaytonaTimeoutError):
        return RLMEnvironmentError(
            f"Daytona timed out while {action}. {said}. Raise environment_kwargs['timeout'] "
            "(seconds to wait for a sandbox) or try again.")
    if status is not None and status >= 500:
        return RLMEnvironmentError(f"the Daytona service failed while {action}. {said}. It is "
                                   "on the provider's side: try again later.")
    if isinstance(exc, daytona.DaytonaError):
        return RLMEnvironmentError(f"Daytona failed while {action}. {said}.")
    return RLMEnvironmentError(f"Daytona failed while {action}: {type(exc).__name__}: {message}")


def _network_failure(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by the network (the SDK wraps urllib3's retries-exhausted
    error in a plain ``DaytonaError``)."""
    import httpx
    import urllib3.exceptions

    kinds = (ConnectionError, urllib3.exceptions.MaxRetryError,
             urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError,
             httpx.TransportError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def call(action: str, fn: Callable[..., T], *args: Any, api_url: str | None = None,
         **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, with SDK errors turned into rlm errors naming ``action``."""
    daytona = sdk()
    try:
        return fn(*args, **kwargs)
    except daytona.DaytonaError as exc:
        raise translate(exc, action, api_url) from exc


__all__ = ["CREDENTIALS_HELP", "DEFAULT_API_URL", "call", "client", "sdk", "translate"]
