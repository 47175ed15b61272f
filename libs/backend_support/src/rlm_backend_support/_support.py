"""What every model backend needs, in one place: retries, error mapping, prices, secrets, usage.

Plugin authors import these from :mod:`rlm_backend_support` (distribution ``rlm-backend-support``)::

    from rlm_backend_support import (PriceTable, RetryPolicy, Secret, error_for_status,
        estimated_usage, missing_key_error, parse_retry_after)

Standard library only; nothing here does I/O except :meth:`RetryPolicy.call` sleeping between
attempts. The pieces are independent: a backend may use the retry loop with its own error
mapping, or the price table alone.

* :class:`RetryPolicy`: how often and how long to wait. Retries the errors whose ``retryable``
  flag is set (429, 5xx, timeouts, connection resets), waiting ``base_delay * 2**n`` scaled by a
  random 50-100 % (jitter), or the server's ``Retry-After`` when it sent one, never longer than
  ``max_delay``.
* :func:`error_for_status`: one HTTP status and the provider's message -> the kernel's
  :class:`~rlm.exceptions.BackendError` subclass, with the provider's words kept.
* :class:`PriceTable`: USD per 1M tokens, built-in table + process-wide additions
  (:func:`register_prices`) + per-backend ``prices=``; dated snapshots and ``provider/`` prefixes
  resolve to their family.
* :class:`Secret` and :func:`redact`: credentials that never show in ``repr``, logs or messages.
* :func:`estimated_usage`: the characters / 4 fallback when a server omits ``usage``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rlm.exceptions import (AuthenticationError, BackendError, BackendTimeoutError,
                         ConfigurationError, ContextWindowExceededError, RateLimitError,
                         ServerError)
from rlm.types import Usage

__all__ = [
    "check_sdk_kwargs",
    "ANTHROPIC_PRICES", "ClientPool", "DEFAULT_PRICES", "OPENAI_PRICES", "PooledBackend", "PriceTable",
    "RetryPolicy",
    "Secret", "as_int", "content_chars", "error_for_status", "error_message_of", "estimate_token_count",
    "estimated_usage", "lookup_model", "missing_key_error", "parse_retry_after", "redact",
    "register_prices", "reported_cost",
]

T = TypeVar("T")

log = logging.getLogger("rlm.backend")


# --- secrets ---------------------------------------------------------------------------------


class Secret:
    """Holds a credential. ``repr``/``str`` show ``'***'``; the value is ``secret.value``.

    Falsy when empty, so ``if self._key:`` reads naturally.
    """

    __slots__ = ("value",)

    def __init__(self, value: str | None):
        self.value = value or ""

    def __repr__(self) -> str:
        return "'***'" if self.value else "None"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __reduce__(self) -> Any:  # never pickle a credential into a trajectory or a sandbox
        raise TypeError("a Secret cannot be pickled")


def check_sdk_kwargs(owner: str, sdk_class: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuse, at construction, extra keyword arguments that ``sdk_class`` would not accept.

    Backends forward unknown ``backend_kwargs`` to their SDK client; without this check a typo
    would only fail at the first model call, with the SDK's bare ``TypeError``. The ``TypeError``
    raised here names the argument and what the SDK accepts (the kernel turns it into a
    :class:`ConfigurationError` naming the plugin).
    """
    import inspect

    try:
        params = inspect.signature(sdk_class.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if n != "self" and p.kind in
                (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"{owner}() got an unexpected keyword argument {unknown[0]!r} (passed on to "
            f"{getattr(sdk_class, '__qualname__', sdk_class)}, which accepts: "
            f"{', '.join(sorted(accepted))})")


def redact(text: str, *secrets: Secret | str | None) -> str:
    """``text`` with every secret (at least 4 characters long) replaced by ``***``."""
    if not text:
        return text
    for secret in secrets:
        value = secret.value if isinstance(secret, Secret) else secret
        if value and len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    return text


def missing_key_error(backend: str, env_var: str, *, model: str | None = None,
                      also: str = "") -> AuthenticationError:
    """The error for a missing credential: names both fixes (``api_key=`` and the variable).

    ``also`` adds a third way (e.g. ``"or pass azure_ad_token"``).
    """
    extra = f" ({also})" if also else ""
    return AuthenticationError(
        f"No API key for the {backend} backend: pass backend_kwargs={{\"api_key\": ...}} or set "
        f"the {env_var} environment variable{extra}.", backend=backend, model=model)


# --- retries ---------------------------------------------------------------------------------


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    ``headers`` is any mapping with a case-insensitive ``get`` (or a plain dict with lower-case
    keys). Returns None when there is no usable value; never negative.
    """
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
    except (TypeError, ValueError, AttributeError):
        pass
    try:
        raw = headers.get("retry-after")
    except AttributeError:
        return None
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    """Retries with exponential backoff, jitter and a cap, honouring ``Retry-After``.

    ``max_retries`` retries after the first attempt (0 disables); the wait before retry ``n``
    (0-based) is ``min(base_delay * 2**n, max_delay)`` scaled by a random 50-100 %, or the error's
    ``retry_after`` (from the server) capped at ``max_delay``. Only errors whose ``retryable``
    attribute is true are retried. ``name`` (the backend's) prefixes configuration errors and the
    log lines of retries.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    name: str = "backend"

    def __post_init__(self) -> None:
        self.validate()
        self.base_delay, self.max_delay = float(self.base_delay), float(self.max_delay)

    def validate(self) -> None:
        backend = self.name
        if (not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool)
                or self.max_retries < 0):
            raise ConfigurationError(f"{backend}: max_retries must be an integer >= 0, "
                                     f"got {self.max_retries!r}")
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 \
                    or not math.isfinite(value):
                raise ConfigurationError(f"{backend}: retry delays must be finite numbers >= 0, "
                                         f"got {name}={value!r}")

    def should_retry(self, err: BaseException, attempt: int) -> bool:
        """True when ``err`` may be retried and attempt ``attempt`` (0-based) was not the last."""
        return bool(getattr(err, "retryable", False)) and attempt < self.max_retries

    def delay(self, err: BaseException | None, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        retry_after = getattr(err, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0 and math.isfinite(retry_after):
            return min(float(retry_after), self.max_delay)
        backoff = min(self.base_delay * (2 ** min(attempt, 62)), self.max_delay)
        return backoff * (0.5 + random.random() / 2)

    def call(self, attempt_fn: Callable[[int], T],
             classify: Callable[[BaseException, int], BackendError]) -> T:
        """Run ``attempt_fn(attempt)`` until it returns, retrying what ``classify`` marks retryable.

        ``classify(exc, attempt)`` turns any exception into a :class:`BackendError`; the error of
        the last attempt is raised (chained to the original exception).
        """
        attempt = 0
        while True:
            try:
                return attempt_fn(attempt)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a BackendError
                time.sleep(self._wait_or_raise(exc, attempt, classify))
                attempt += 1

    async def acall(self, attempt_fn: Callable[[int], Awaitable[T]],
                    classify: Callable[[BaseException, int], BackendError]) -> T:
        """The awaitable form of :meth:`call` (waits with ``asyncio.sleep``)."""
        attempt = 0
        while True:
            try:
                return await attempt_fn(attempt)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a BackendError
                await asyncio.sleep(self._wait_or_raise(exc, attempt, classify))
                attempt += 1

    def _wait_or_raise(self, exc: Exception, attempt: int,
                       classify: Callable[[BaseException, int], BackendError]) -> float:
        """After a failed ``attempt``: the seconds to wait before the next one (logged), or the
        :class:`BackendError` raised when it is not to be retried."""
        err = exc if isinstance(exc, BackendError) else classify(exc, attempt)
        if not self.should_retry(err, attempt):
            raise err from (None if err is exc else exc)
        wait = self.delay(err, attempt)
        log.info("%s: %s; retry %d of %d in %.2f s", self.name, type(err).__name__,
                 attempt + 1, self.max_retries, wait)
        return wait


# --- HTTP status -> kernel exception ------------------------------------------------------------


_CONTEXT_PHRASES = ("context length", "context window", "maximum context", "prompt is too long",
                    "too many tokens", "input is too long", "exceeds the context")


def error_for_status(status: int, provider_message: str | None, *, backend: str,
                     model: str | None = None, code: str | None = None,
                     error_type: str | None = None, retry_after: float | None = None,
                     attempts: int = 1, key_env: str | None = None) -> BackendError:
    """The kernel exception for an HTTP error answer, keeping the provider's own message.

    ============================  ==================================  =========
    status / code                 exception                           retried
    ============================  ==================================  =========
    401, 403                      AuthenticationError                 no
    429                           RateLimitError (``retry_after``)    yes, not ``insufficient_quota``
    400/413 + context phrases     ContextWindowExceededError          no
    408                           BackendTimeoutError                 yes
    5xx (529 overloaded too)      ServerError                         yes
    any other                     BackendError                        no
    ============================  ==================================  =========

    ``attempts`` (when > 1) is mentioned in the message; ``key_env`` names the variable a 401
    hint points at.
    """
    name = f"{backend} ({model})" if model else backend
    message = provider_message or f"HTTP {status}"
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    kw: dict[str, Any] = {"backend": backend, "model": model, "status_code": status,
                          "provider_message": provider_message}
    lowered = message.lower()
    codes = {str(code or "").lower(), str(error_type or "").lower()}
    if status in (401, 403):
        hint = ""
        if status == 401:
            hint = " Check the key (backend_kwargs={\"api_key\": ...}"
            hint += f" or {key_env})." if key_env else ")."
        return AuthenticationError(
            f"{name}: HTTP {status} authentication failed: {message.rstrip('.')}.{hint}", **kw)
    if status == 429:
        err = RateLimitError(f"{name}: HTTP 429 rate limited{tries}: {message}",
                             retry_after=retry_after, **kw)
        if "insufficient_quota" in codes:
            err.retryable = False  # out of credit: waiting will not help
        return err
    if "context_length_exceeded" in codes or (
            status in (400, 413) and any(p in lowered for p in _CONTEXT_PHRASES)):
        return ContextWindowExceededError(
            f"{name}: the prompt does not fit the context window: {message}", **kw)
    if status == 408:
        return BackendTimeoutError(f"{name}: HTTP 408 request timeout{tries}: {message}", **kw)
    if status >= 500:
        what = "overloaded" if status == 529 else "server error"
        return ServerError(f"{name}: HTTP {status} {what}{tries}: {message}", **kw)
    return BackendError(f"{name}: HTTP {status}: {message}", **kw)


def error_message_of(body: Any) -> tuple[str | None, str | None, str | None]:
    """``(message, code, type)`` from an error body in the OpenAI or Anthropic shape.

    OpenAI: ``{"error": {"message", "type", "code"}}``; Anthropic: ``{"type": "error", "error":
    {"type", "message"}}``; some proxies: ``{"error": "text"}`` or ``{"message": "text"}``.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return (body.strip()[:2000] or None), None, None
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return None, None, None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = None
    code = error.get("code")
    etype = error.get("type")
    return (message, None if code is None else str(code), None if etype is None else str(etype))


# --- prices ----------------------------------------------------------------------------------


# USD per 1M tokens (input, output), from the providers' public price lists. Prices change:
# pass ``prices=`` to a backend or call :func:`register_prices` to correct or add models.
OPENAI_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}

ANTHROPIC_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-haiku": (0.25, 1.25),
}

DEFAULT_PRICES: dict[str, tuple[float, float]] = {**OPENAI_PRICES, **ANTHROPIC_PRICES}

_registered_prices: dict[str, tuple[float, float]] = {}
_registered_lock = threading.Lock()


def _price_pair(model: str, value: Any) -> tuple[float, float]:
    try:
        inp, out = value
        pair = (float(inp), float(out))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"price of {model!r} must be (usd_per_1m_input_tokens, usd_per_1m_output_tokens), "
            f"got {value!r}") from exc
    if not all(math.isfinite(p) and p >= 0 for p in pair):
        raise ConfigurationError(f"price of {model!r} must be two finite numbers >= 0, got {value!r}")
    return pair


def register_prices(prices: Mapping[str, Sequence[float]]) -> None:
    """Add or correct prices for every backend of this process (USD per 1M input/output tokens).

    Per-backend ``prices=`` still win over these; these win over the built-in tables.
    """
    checked = {str(k): _price_pair(str(k), v) for k, v in prices.items()}
    with _registered_lock:
        _registered_prices.update(checked)


def lookup_model(table: Mapping[str, T], model: str | None) -> T | None:
    """``table[model]``, else the entry of the longest name that ``model`` extends with ``-...``.

    ``gpt-4o-2024-08-06`` -> ``gpt-4o``; ``claude-sonnet-4-20250514`` -> ``claude-sonnet-4``.
    Provider prefixes are ignored: ``openai/gpt-4o``, ``@openai/gpt-5-nano`` and
    ``openrouter/anthropic/claude-3-haiku`` resolve like the bare name.
    """
    if not model:
        return None
    name = model.rsplit("/", 1)[-1]
    for candidate in (model, name):
        if candidate in table:
            return table[candidate]
    best = None
    for key in table:
        if name.startswith(key + "-") and (best is None or len(key) > len(best)):
            best = key
    return table[best] if best is not None else None


class PriceTable:
    """USD per 1M tokens per model: ``overrides`` over :func:`register_prices` over ``base``."""

    def __init__(self, base: Mapping[str, Sequence[float]] | None = None,
                 overrides: Mapping[str, Sequence[float]] | None = None):
        self.base = {k: _price_pair(k, v) for k, v in (DEFAULT_PRICES if base is None else base).items()}
        self.overrides = {str(k): _price_pair(str(k), v) for k, v in (overrides or {}).items()}

    def price(self, model: str | None) -> tuple[float, float] | None:
        """(input, output) USD per 1M tokens of ``model``, None when unknown."""
        for table in (self.overrides, _registered_prices, self.base):
            hit = lookup_model(table, model)
            if hit is not None:
                return hit
        return None

    def cost(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """USD for one call, None when the model has no price."""
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000

    def as_dict(self) -> dict[str, tuple[float, float]]:
        with _registered_lock:
            return {**self.base, **_registered_prices, **self.overrides}

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable({len(self.as_dict())} models)"


# --- usage -----------------------------------------------------------------------------------


def content_chars(content: Any) -> int:
    """Characters of a message ``content``: a string, or a list of parts/blocks with ``text``."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
        return total
    return len(str(content))


def estimate_token_count(chars: int) -> int:
    """The characters / 4 estimate (rounded up, at least 1)."""
    return max(1, math.ceil(chars / 4))


def estimated_usage(messages: Iterable[Mapping[str, Any]] | str, output_text: str,
                    extra_input_chars: int = 0) -> Usage:
    """Usage when the server reported none: characters / 4 each way, ``estimated=True``."""
    if isinstance(messages, str):
        chars = len(messages)
    else:
        chars = sum(content_chars(m.get("content")) for m in messages if isinstance(m, Mapping))
    return Usage(input_tokens=estimate_token_count(chars + extra_input_chars),
                 output_tokens=estimate_token_count(len(output_text or "")), estimated=True)


def as_int(value: Any) -> int:
    """A token count from a JSON value (None, floats, strings tolerated; garbage is 0)."""
    if isinstance(value, bool):
        return 0
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def reported_cost(value: Any) -> float | None:
    """A provider-reported cost (USD) if ``value`` is a usable number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        else:
            return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


# --- SDK clients -----------------------------------------------------------------------------


class ClientPool:
    """One sync SDK client and one async client per event loop, made on first use and reused.

    ``make_sync()`` / ``make_async()`` build the clients (e.g. ``anthropic.Anthropic(...)``);
    clients need ``close()`` (sync) and an awaitable ``close()`` (async), as the Stainless-made
    SDKs (openai, anthropic) have. An async client belongs to the loop it was made on: calling
    from another loop gets another client, and clients of closed loops are forgotten.
    ``close()`` is safe inside or outside a running loop, twice, and after a loop is gone;
    ``await aclose()`` awaits the current loop's client.
    """

    def __init__(self, make_sync: Callable[[], Any], make_async: Callable[[], Any]):
        self._make_sync = make_sync
        self._make_async = make_async
        self._lock = threading.Lock()
        self.sync_client: Any = None
        self.async_clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._closers: dict[asyncio.AbstractEventLoop, Any] = {}
        self._closing: set[Any] = set()

    def sync(self) -> Any:
        client = self.sync_client
        if client is None:
            with self._lock:
                client = self.sync_client
                if client is None:
                    client = self.sync_client = self._make_sync()
        return client

    def async_(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self.async_clients.get(loop)
        if client is None:
            with self._lock:
                client = self.async_clients.get(loop)
                if client is None:
                    for old in [lp for lp in self.async_clients if lp.is_closed()]:
                        del self.async_clients[old]
                        self._closers.pop(old, None)
                    client = self.async_clients[loop] = self._make_async()
                    self._close_with_loop(loop, client)
        return client

    def _close_with_loop(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        """Close ``client`` when its loop shuts down (``asyncio.run`` finalizes the loop's async
        generators before closing it): a loop's connections must not outlive it open."""
        closer = _close_at_loop_end(client)
        self._closers[loop] = closer  # the loop keeps only a weak reference
        task = loop.create_task(_start(closer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close(self) -> None:
        with self._lock:
            sync, self.sync_client = self.sync_client, None
            clients = list(self.async_clients.items())
            self.async_clients = {}
            self._closers = {}  # closed below; a running loop finalizes its closer harmlessly
        if sync is not None:
            try:
                sync.close()
            except Exception:  # noqa: BLE001 - closing must not raise
                pass
        for loop, client in clients:
            self._close_async(loop, client)

    def _close_async(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        try:
            if loop.is_closed():
                return  # closed when its loop shut down (_close_with_loop)
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if loop.is_running():
                if current is loop:
                    task = loop.create_task(client.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
                else:
                    asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
            elif current is None:
                loop.run_until_complete(client.close())
        except Exception:  # noqa: BLE001
            pass

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = self.async_clients.pop(loop, None)
        if mine is not None:
            try:
                await mine.close()
            except Exception:  # noqa: BLE001
                pass
        self.close()


async def _close_at_loop_end(client: Any) -> Any:
    """An async generator that closes ``client`` when the loop finalizes it at shutdown."""
    try:
        yield
    finally:
        try:
            await client.close()
        except Exception:  # noqa: BLE001 - closing at shutdown must not raise
            pass


async def _start(agen: Any) -> None:
    await agen.__anext__()  # runs to the yield: from now on the loop finalizes it


class PooledBackend:
    """The lifecycle of a backend whose SDK clients live in a :class:`ClientPool` (``self._pool``):
    ``close()`` (safe twice, inside or outside an event loop), ``await aclose()`` and
    ``with backend:``. Subclasses set ``self._pool`` in ``__init__``."""

    _pool: ClientPool

    def close(self) -> None:
        """Close the SDK clients and their connection pools."""
        self._pool.close()

    async def aclose(self) -> None:
        """Close the current event loop's async client (awaited), then the others."""
        await self._pool.aclose()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
