"""The OpenAI and Azure OpenAI chat-completions backends.

Both keep the official SDK for what it is good at (authentication, client configuration, typed
errors, the connection pool) but send each request through the SDK's low-level
``client.post("/chat/completions", body=..., cast_to=bytes)`` path and parse the JSON themselves.
That skips the SDK's per-message request transform and response model building, which cost
about half a millisecond per message (≈ 40 ms per call at 200 messages); this path costs a few
tenths of a millisecond per call above raw ``httpx`` (``benchmarks/bench_openai_overhead.py``).

Retries are done here rather than in the SDK (whose client is built with ``max_retries=0``), so
that the backoff, the ``Retry-After`` cap and the errors raised after the last attempt are ours and
testable. The retry policy, the HTTP-status-to-exception mapping, the price table, key masking and
the usage fallback are the kernel's shared backend support (:mod:`rlm.plugin`), which the other
backend distributions use too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
import threading
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from rlm.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadResponseError,
    ConfigurationError,
)
from rlm_backend_support import (OPENAI_PRICES, ClientPool, PriceTable, RetryPolicy, Secret,
    as_int, check_sdk_kwargs, content_chars, error_for_status, error_message_of,
    estimate_token_count, estimated_usage, lookup_model, missing_key_error, parse_retry_after,
    redact, reported_cost)
from rlm.types import ModelResponse, Usage

from ._plainhttp import PlainHTTPPool, ProtocolError, request_head

__all__ = ["AzureOpenAIBackend", "CONTEXT_WINDOWS", "OpenAIBackend", "PRICES", "lookup_model"]

log = logging.getLogger("rlm_backend_openai")


def _sdk() -> Any:
    """The ``openai`` SDK, imported on first use: it takes 0.5–0.8 s to import here, and requests
    to a plain-HTTP local server never need it (see ``_plain_acompletion``)."""
    import openai

    return openai

OFFICIAL_HOST = "api.openai.com"
PLACEHOLDER_API_KEY = "not-needed"  # sent to custom endpoints when no key is configured
DEFAULT_MODEL = "gpt-4o"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
_PATH = "/chat/completions"

# USD per 1M tokens (input, output) of OpenAI models: the kernel's table (``rlm.plugin``). Dated
# snapshots ("gpt-4o-2024-08-06") use the entry of their family; extend or override with
# ``prices=`` or ``rlm.plugin.register_prices``.
PRICES: dict[str, tuple[float, float]] = OPENAI_PRICES

# Context windows in tokens (input plus output) of known OpenAI models.
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}

# SDK client arguments the plain-HTTP path reproduces; any other one sends requests through the SDK.
_PLAIN_SDK_KWARGS = frozenset({"api_key", "base_url", "timeout", "max_retries", "organization",
                               "default_headers"})

# Request options of the SDK that callers may pass among the sampling arguments.
_OPTION_KEYS = ("extra_headers", "extra_query", "extra_body", "timeout")

# The sampling arguments a run may pass (``sampling_args``, ``rlm run -o KEY VALUE``): the chat
# completions parameters, plus the SDK's per-request options. ``rlm run`` checks ``-o`` names
# against this table (see rlm_cli.models).
SAMPLING_OPTIONS: dict[str, str] = {
    "temperature": "sampling temperature, 0-2",
    "top_p": "nucleus sampling probability mass, 0-1",
    "max_tokens": "most tokens in the reply",
    "max_completion_tokens": "most tokens in the reply, reasoning included (o-series models)",
    "stop": "a string or list of strings that end the reply",
    "seed": "integer for best-effort deterministic sampling",
    "presence_penalty": "-2..2: penalise tokens already present",
    "frequency_penalty": "-2..2: penalise frequent tokens",
    "logit_bias": "JSON object of token id -> bias",
    "response_format": 'JSON object, e.g. {"type": "json_object"}',
    "reasoning_effort": "low, medium or high (reasoning models)",
    "verbosity": "low, medium or high (gpt-5 models)",
    "service_tier": "auto, default, flex or priority",
    "user": "an end-user id for the provider's abuse monitoring",
    "model": "the model of this call (rlm run: use -m)",
    "extra_headers": "JSON object of extra HTTP headers",
    "extra_query": "JSON object of extra query parameters",
    "extra_body": "JSON object merged into the request body",
    "timeout": "seconds for this request",
}


_chars = content_chars
estimate_tokens = estimate_token_count  # the characters/4 estimate, kept under its old name
_retry_after = parse_retry_after
_Secret = Secret


class _Tokenizer:
    """tiktoken when it is installed (never installed by this package), else None."""

    _lock = threading.Lock()
    _encodings: dict[str, Any] = {}
    _missing = False

    @classmethod
    def get(cls, model: str) -> Any:
        if cls._missing:
            return None
        with cls._lock:
            if model in cls._encodings:
                return cls._encodings[model]
            try:
                import tiktoken  # optional, only if already installed
            except ImportError:
                cls._missing = True
                return None
            try:
                try:
                    enc = tiktoken.encoding_for_model(model)
                except KeyError:
                    enc = tiktoken.get_encoding("o200k_base")
            except Exception:  # noqa: BLE001 - e.g. the encoding file cannot be fetched offline
                enc = None
            cls._encodings[model] = enc
            return enc


class OpenAIBackend:
    """Chat completions on the OpenAI API or any OpenAI-compatible server.

    ``model_name`` (alias ``model``) is the default model; a ``model=`` sampling argument overrides
    it for one call. The key is ``api_key``, else ``$OPENAI_API_KEY``; a custom ``base_url``
    (a local server) works without one. Every other keyword goes to the SDK client constructor.
    """

    backend_name = "openai"
    _sdk_class_name = "OpenAI"  # the SDK client class extra keyword arguments go to
    api_key_env = "OPENAI_API_KEY"
    default_prices: Mapping[str, tuple[float, float]] = PRICES  # subclasses pick their table
    default_context_windows: Mapping[str, int] | None = None  # None: the OpenAI windows
    sampling_options: Mapping[str, str] = SAMPLING_OPTIONS  # what -o / sampling_args accept

    def __init__(self, model_name: str | None = None, api_key: str | None = None,
                 base_url: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 organization: str | None = None, default_headers: Mapping[str, str] | None = None,
                 prices: Mapping[str, tuple[float, float]] | None = None, *,
                 model: str | None = None, retry_base_delay: float = 0.5,
                 retry_max_delay: float = 30.0,
                 context_windows: Mapping[str, int] | None = None, **client_kwargs: Any):
        if model_name is not None and model is not None and model_name != model:
            raise ConfigurationError(
                f"{self.backend_name}: model_name={model_name!r} and model={model!r} disagree; "
                "pass one of them.")
        self.model_name: str = model_name or model or self._default_model()
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise ConfigurationError(f"{self.backend_name}: timeout must be > 0 seconds, got {timeout!r}")
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay, name=self.backend_name)
        self.timeout = timeout
        self.organization = organization
        self.default_headers = dict(default_headers or {})
        self.price_table = PriceTable(self.default_prices, prices)
        self.context_windows: dict[str, int] = {**(self.default_context_windows or CONTEXT_WINDOWS),
                                                **dict(context_windows or {})}
        self.base_url = self._resolve_base_url(base_url)
        self._api_key = Secret(self._resolve_api_key(api_key))
        self._http_client = client_kwargs.pop("http_client", None)
        self._async_http_client = client_kwargs.pop("async_http_client", None)
        if client_kwargs:  # only extra arguments need the SDK class to be checked against
            check_sdk_kwargs(type(self).__name__, getattr(_sdk(), self._sdk_class_name), client_kwargs)
        self._client_kwargs = client_kwargs
        # One sync client and one async client per event loop, made on first use and reused.
        self._pool = ClientPool(lambda: self._wrap_construct(self._make_sync_client),
                                lambda: self._wrap_construct(self._make_async_client))
        self._warned_estimate = False
        # Plain-HTTP connection pools, one per event loop (see _plain_acompletion).
        self._plain_pools: dict[asyncio.AbstractEventLoop, PlainHTTPPool] = {}
        self._plain_lock = threading.Lock()

    # -- configuration --------------------------------------------------------------------
    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    @property
    def retry_base_delay(self) -> float:
        return self.retry.base_delay

    @property
    def retry_max_delay(self) -> float:
        return self.retry.max_delay

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """The effective price table: ``prices=`` over ``register_prices`` over the built-ins."""
        return self.price_table.as_dict()

    def _default_model(self) -> str:
        return DEFAULT_MODEL

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        return base_url or os.environ.get("OPENAI_BASE_URL") or None

    @property
    def is_official_endpoint(self) -> bool:
        if self.base_url is None:
            return True
        return (urlsplit(self.base_url).hostname or "").lower() == OFFICIAL_HOST

    def _resolve_api_key(self, api_key: str | None) -> str:
        from rlm.keys import resolve_api_key

        # api_key, then `rlm keys set openai` (sent only to the provider's own endpoint, never to
        # a custom base_url), then the environment variable.
        key = resolve_api_key(api_key, env_var=self.api_key_env,
                              key_name=self.backend_name if self.is_official_endpoint else None)
        if key:
            return key
        if self.is_official_endpoint:
            raise missing_key_error(self.backend_name, self.api_key_env, model=self.model_name,
                                    also=f"or store one with: rlm keys set {self.backend_name}")
        return PLACEHOLDER_API_KEY

    @property
    def has_api_key(self) -> bool:
        return self._api_key.value != PLACEHOLDER_API_KEY

    def __repr__(self) -> str:
        key = "'***'" if self.has_api_key else "None"
        return (f"{type(self).__name__}(model_name={self.model_name!r}, base_url={self.base_url!r}, "
                f"api_key={key}, timeout={self.timeout!r}, max_retries={self.max_retries!r})")

    __str__ = __repr__

    # -- SDK clients: created lazily, one sync client and one async client per event loop ------
    def _sdk_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"api_key": self._api_key.value, "base_url": self.base_url,
                              "timeout": self.timeout, "max_retries": 0,
                              "organization": self.organization}
        if self.default_headers:
            kw["default_headers"] = self.default_headers
        kw.update(self._client_kwargs)
        return kw

    def _make_sync_client(self) -> Any:
        kw = self._sdk_kwargs()
        if self._http_client is not None:
            kw["http_client"] = self._http_client
        return _sdk().OpenAI(**kw)

    def _make_async_client(self) -> Any:
        kw = self._sdk_kwargs()
        if self._async_http_client is not None:
            kw["http_client"] = self._async_http_client
        return _sdk().AsyncOpenAI(**kw)

    def _sync_client(self) -> Any:
        return self._pool.sync()

    def _async_client(self) -> Any:
        return self._pool.async_()

    def _wrap_construct(self, make: Any) -> Any:
        try:
            return make()
        except _sdk().OpenAIError as exc:  # the SDK refused its configuration
            raise ConfigurationError(f"{self.backend_name}: {self._redact(str(exc))}") from None

    def close(self) -> None:
        """Close the connection pools. Safe to call twice, from inside or outside an event loop."""
        self._pool.close()
        with self._plain_lock:
            pools, self._plain_pools = list(self._plain_pools.items()), {}
        for loop, pool in pools:
            if loop.is_closed() or not loop.is_running():
                pool.close()
            else:
                try:
                    loop.call_soon_threadsafe(pool.close)
                except RuntimeError:  # closed in between
                    pool.close()

    async def aclose(self) -> None:
        """Close the pools, awaiting the current loop's async client."""
        await self._pool.aclose()
        with self._plain_lock:
            mine = self._plain_pools.pop(asyncio.get_running_loop(), None)
        if mine is not None:
            mine.close()  # this loop's plain-HTTP connections, now
        self.close()  # and those of other loops

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Backend protocol ------------------------------------------------------------
    def completion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        body, model, options = self._build(messages, sampling)
        client = self._sync_client()

        def attempt(n: int) -> ModelResponse:
            raw = client.post(_PATH, body=body, cast_to=bytes, options=self._attempt_options(options, n))
            return self._parse(raw, body, model)

        return self.retry.call(attempt, self._classifier(model, options))

    async def acompletion(self, messages: Sequence[Mapping[str, Any]] | str, **sampling: Any) -> ModelResponse:
        body, model, options = self._build(messages, sampling)
        if not options and self._plain_target is not None:
            return await self._plain_acompletion(body, model)
        client = self._async_client()

        async def attempt(n: int) -> ModelResponse:
            raw = await client.post(_PATH, body=body, cast_to=bytes,
                                    options=self._attempt_options(options, n))
            return self._parse(raw, body, model)

        return await self.retry.acall(attempt, self._classifier(model, options))

    # -- the lean path for plain-HTTP local servers (see _plainhttp) ---------------------
    @functools.cached_property
    def _plain_target(self) -> tuple[str, int, str] | None:
        """``(host, port, path)`` of the chat-completions URL when requests may skip the SDK:
        an ``http://`` base URL, no proxy for it in the environment, no custom HTTP client or
        extra SDK arguments, the plain OpenAI client (not Azure). None otherwise."""
        if (self._sdk_class_name != "OpenAI" or self.base_url is None or self._client_kwargs
                or self._http_client is not None or self._async_http_client is not None
                or type(self)._make_async_client is not OpenAIBackend._make_async_client
                or os.environ.get("RLM_OPENAI_PLAIN_HTTP", "1") == "0"):
            return None
        kw = self._sdk_kwargs()  # subclasses add headers here (Portkey, OpenRouter)
        if set(kw) - _PLAIN_SDK_KWARGS or kw.get("base_url") != self.base_url:
            return None
        url = urlsplit(self.base_url)
        if url.scheme != "http" or not url.hostname or url.query or url.fragment:
            return None
        proxies = urllib.request.getproxies_environment()
        if (proxies.get("http") or proxies.get("all")) and not urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                url.hostname, proxies):
            return None
        try:
            port = url.port or 80
        except ValueError:
            return None
        return url.hostname, port, url.path.rstrip("/") + _PATH

    @functools.cached_property
    def _plain_headers(self) -> dict[str, str]:
        kw = self._sdk_kwargs()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "rlm-backend-openai (plain-http)",
                   "Authorization": f"Bearer {kw['api_key']}"}
        if kw.get("organization"):
            headers["OpenAI-Organization"] = kw["organization"]
        # The user's headers replace ours whatever their case, as httpx's case-insensitive
        # headers do on the SDK path: a custom ``authorization`` means the key is not sent too.
        custom = dict(kw.get("default_headers") or {})
        replaced = {name.lower() for name in custom}
        headers = {name: value for name, value in headers.items() if name.lower() not in replaced}
        headers.update(custom)
        return headers

    def _plain_pool(self) -> PlainHTTPPool:
        loop = asyncio.get_running_loop()
        pools = self._plain_pools
        pool = pools.get(loop)
        if pool is None:
            with self._plain_lock:
                for old in [lp for lp in pools if lp.is_closed()]:
                    pools.pop(old).close()
                host, port, _ = self._plain_target  # type: ignore[misc]
                pool = pools.setdefault(loop, PlainHTTPPool(host, port))
        return pool

    async def _plain_acompletion(self, body: dict[str, Any], model: str) -> ModelResponse:
        host, port, path = self._plain_target  # type: ignore[misc]
        netloc = host if port == 80 else f"{host}:{port}"
        if ":" in host:
            netloc = f"[{host}]:{port}"
        payload = json.dumps(body).encode("utf-8")
        pool = self._plain_pool()

        async def attempt(n: int) -> ModelResponse:
            headers = self._plain_headers
            if n:
                headers = {**headers, "x-stainless-retry-count": str(n)}
            head = request_head("POST", path, netloc, headers, len(payload))
            tries = f" (after {n + 1} attempts)" if n else ""
            try:
                async with asyncio.timeout(self.timeout):
                    response = await pool.request(head, payload)
            except TimeoutError:
                raise BackendTimeoutError(
                    f"{self.backend_name} ({model}): no answer within the request timeout "
                    f"({self.timeout} s){tries}", backend=self.backend_name, model=model) from None
            except (OSError, EOFError, ProtocolError, zlib.error) as exc:
                raise BackendConnectionError(self._redact(
                    f"{self.backend_name} ({model}): could not reach {self.base_url} or the connection "
                    f"was reset{tries}: {type(exc).__name__}: {exc}"), backend=self.backend_name,
                    model=model) from None
            if not 200 <= response.status < 300:
                raise self._plain_status_error(response, model, n)
            return self._parse(response.body, body, model)

        return await self.retry.acall(attempt, self._classifier(model, {}))

    def _plain_status_error(self, response: Any, model: str, attempt: int) -> BackendError:
        """The error the SDK path raises for this status and body: the same ``_status_error``
        (subclasses refine it) fed with what the SDK's exception would carry."""
        text = response.body.decode("utf-8", "replace").strip()
        data: Any = text
        try:
            parsed = json.loads(text)
        except ValueError:
            pass
        else:
            data = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        shim = SimpleNamespace(status_code=response.status, body=data,
                               message=f"Error code: {response.status} - {data}",
                               response=SimpleNamespace(headers=response.headers))
        return self._status_error(shim, model, attempt)

    def _classifier(self, model: str, options: Mapping[str, Any]) -> Any:
        timeout = options.get("timeout")
        return lambda exc, n: self._to_backend_error(exc, model, n, timeout)

    # -- optional extras the kernel looks up ---------------------------------------------
    def context_window(self, model: str | None = None) -> int | None:
        """The context window in tokens of ``model`` (default: this backend's), None if unknown."""
        return lookup_model(self.context_windows, model or self.model_name)

    def count_tokens(self, messages: Sequence[Mapping[str, Any]] | str, model: str | None = None) -> int:
        """Tokens of ``messages``: tiktoken if it is installed, else the characters/4 estimate."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        enc = _Tokenizer.get(model or self.model_name)
        if enc is None:
            return estimate_tokens(sum(content_chars(m.get("content")) for m in messages))
        total = 3  # every reply is primed with <|start|>assistant<|message|>
        for m in messages:
            total += 3
            for key, value in m.items():
                if isinstance(value, str):
                    total += len(enc.encode(value, disallowed_special=()))
                elif key == "content" and value is not None:
                    total += estimate_tokens(content_chars(value))
        return total

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for a call from the price table, None when the model has no price."""
        return self.price_table.cost(model, input_tokens, output_tokens)

    # -- request building ----------------------------------------------------------------
    def _build(self, messages: Sequence[Mapping[str, Any]] | str,
               sampling: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif not isinstance(messages, list):
            messages = list(messages)
        sampling = dict(sampling)
        options: dict[str, Any] = {}
        for key in _OPTION_KEYS:
            if key in sampling:
                value = sampling.pop(key)
                if value is None:
                    continue
                if key == "extra_headers":
                    options["headers"] = dict(value)
                elif key == "extra_query":
                    options["params"] = dict(value)
                elif key == "extra_body":
                    options["extra_json"] = dict(value)
                else:
                    options["timeout"] = value
        if sampling.get("stream"):
            raise ConfigurationError(
                f"{self.backend_name}: stream=True is not supported (the backend returns whole "
                "replies); drop 'stream' from the sampling arguments.")
        sampling.pop("stream", None)
        model = sampling.pop("model", None) or self.model_name
        body = {"model": model, "messages": messages}
        # None means "not set": sending JSON null would be rejected by most servers
        body.update((k, v) for k, v in sampling.items() if v is not None)
        return body, model, options

    @staticmethod
    def _attempt_options(options: dict[str, Any], attempt: int) -> dict[str, Any]:
        if attempt == 0:
            return options
        headers = {**options.get("headers", {}), "x-stainless-retry-count": str(attempt)}
        return {**options, "headers": headers}

    # -- response parsing ----------------------------------------------------------------
    def _parse(self, raw: bytes, body: dict[str, Any], model: str) -> ModelResponse:
        try:
            data = json.loads(raw)
        except (ValueError, TypeError) as exc:
            snippet = raw[:200].decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else repr(raw)[:200]
            raise BadResponseError(
                f"{self.backend_name} ({model}): the server answered with something that is not "
                f"JSON ({exc}): {snippet!r}", backend=self.backend_name, model=model,
                status_code=200, provider_message=snippet) from None
        if not isinstance(data, dict):
            raise BadResponseError(f"{self.backend_name} ({model}): expected a JSON object, got "
                                   f"{type(data).__name__}", backend=self.backend_name, model=model,
                                   status_code=200)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            error = data.get("error")
            if error is not None:  # some proxies answer 200 with an error object
                message = self._redact(error_message_of(data)[0] or json.dumps(error)[:500])
                raise BadResponseError(f"{self.backend_name} ({model}): the server returned an error "
                                       f"instead of a completion: {message}", backend=self.backend_name,
                                       model=model, status_code=200, provider_message=message)
            raise BadResponseError(f"{self.backend_name} ({model}): the response has no choices: "
                                   f"{json.dumps(data)[:200]}", backend=self.backend_name, model=model,
                                   status_code=200)
        choice = choices[0]
        reply = choice.get("message")
        if not isinstance(reply, dict):
            raise BadResponseError(f"{self.backend_name} ({model}): choices[0] has no message",
                                   backend=self.backend_name, model=model, status_code=200)
        content = reply.get("content")
        if content is None:
            text = reply.get("refusal") or ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        else:
            text = str(content)
        reported = data.get("model")
        served = reported if isinstance(reported, str) and reported else model
        usage = self._usage(data.get("usage"), body, text, served, model)
        # ``model`` is the name that was asked for (the run's usage is keyed by it); the served
        # snapshot name (``gpt-4o-2024-08-06``, or the model behind an Azure deployment) only
        # picks the price.
        return ModelResponse(text=text, usage=usage, model=model, finish_reason=choice.get("finish_reason"))

    def _usage(self, raw: Any, body: dict[str, Any], text: str, served: str, requested: str) -> Usage:
        cost = None
        if isinstance(raw, dict) and (raw.get("prompt_tokens") is not None
                                      or raw.get("completion_tokens") is not None):
            usage = Usage(input_tokens=as_int(raw.get("prompt_tokens")),
                          output_tokens=as_int(raw.get("completion_tokens")))
            cost = reported_cost(raw.get("cost"))  # OpenRouter and some proxies report it
        else:
            usage = estimated_usage(body["messages"], text)
            if not self._warned_estimate:
                self._warned_estimate = True
                log.warning("%s: the server at %s sent no usage for model %s; token counts are "
                            "estimated (characters / 4) and marked Usage.estimated=True. This is "
                            "logged once per backend.", self.backend_name,
                            self.base_url or "api.openai.com", served)
        if cost is None:
            cost = self.cost(served, usage.input_tokens, usage.output_tokens)
            if cost is None and served != requested:
                cost = self.cost(requested, usage.input_tokens, usage.output_tokens)
        usage.cost = cost
        return usage

    # -- errors and retries --------------------------------------------------------------
    def _secrets(self) -> tuple[Any, ...]:
        """Credentials to mask in every message this backend produces."""
        key = self._api_key.value
        return (key,) if key != PLACEHOLDER_API_KEY else ()

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets())

    def _to_backend_error(self, exc: BaseException, model: str, attempt: int,
                          timeout: Any = None) -> BackendError:
        name = self.backend_name
        kw: dict[str, Any] = {"backend": self.backend_name, "model": model}
        tries = f" (after {attempt + 1} attempts)" if attempt else ""
        if isinstance(exc, BackendError):
            return exc
        # SDK exceptions exist only once the SDK is imported (the plain-HTTP path never imports it).
        openai = sys.modules.get("openai")
        if openai is None:
            return BackendError(f"{name} ({model}): {type(exc).__name__}: {self._redact(str(exc))}", **kw)
        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeoutError(f"{name} ({model}): no answer within the request timeout "
                                       f"({timeout if timeout is not None else self.timeout} s){tries}",
                                       **kw)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
            where = self.base_url or "https://api.openai.com/v1"
            return BackendConnectionError(self._redact(
                f"{name} ({model}): could not reach {where} or the connection was reset{tries}{detail}"), **kw)
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, model, attempt)
        if isinstance(exc, openai.APIResponseValidationError):
            return BadResponseError(f"{name} ({model}): invalid response: {self._redact(str(exc))}",
                                    **kw)
        return BackendError(f"{name} ({model}): {type(exc).__name__}: {self._redact(str(exc))}", **kw)

    def _status_error(self, exc: Any, model: str, attempt: int) -> BackendError:
        status = int(getattr(exc, "status_code", 0) or 0)
        body = getattr(exc, "body", None)
        provider, code, etype = error_message_of(body)
        if provider is None:
            provider = getattr(exc, "message", None) or str(exc)
        response = getattr(exc, "response", None)
        retry_after = parse_retry_after(getattr(response, "headers", None)) if status == 429 else None
        return error_for_status(status, self._redact(str(provider)), backend=self.backend_name,
                                model=model, code=code, error_type=etype, retry_after=retry_after,
                                attempts=attempt + 1, key_env=self.api_key_env)

    def _should_retry(self, err: BackendError, attempt: int) -> bool:
        return self.retry.should_retry(err, attempt)

    def _retry_delay(self, err: BackendError, attempt: int) -> float:
        return self.retry.delay(err, attempt)


class AzureOpenAIBackend(OpenAIBackend):
    """Chat completions on Azure OpenAI.

    ``azure_endpoint`` (or ``$AZURE_OPENAI_ENDPOINT``), ``api_version`` (or
    ``$OPENAI_API_VERSION``, else a GA default), ``azure_deployment`` (default: the model name is
    used as the deployment), key ``api_key`` or ``$AZURE_OPENAI_API_KEY`` (or an Entra ID token
    through ``azure_ad_token`` / ``azure_ad_token_provider``).
    """

    backend_name = "azure_openai"
    _sdk_class_name = "AzureOpenAI"
    api_key_env = "AZURE_OPENAI_API_KEY"

    def __init__(self, model_name: str | None = None, api_key: str | None = None, *,
                 azure_endpoint: str | None = None, api_version: str | None = None,
                 azure_deployment: str | None = None, azure_ad_token: str | None = None,
                 azure_ad_token_provider: Any = None, base_url: str | None = None,
                 model: str | None = None, **kwargs: Any):
        self.azure_endpoint = azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        self.api_version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
        self.azure_deployment = azure_deployment
        self._azure_ad_token = Secret(azure_ad_token) if azure_ad_token else None
        self._azure_ad_token_provider = azure_ad_token_provider
        if not self.azure_endpoint and not base_url:
            raise ConfigurationError(
                "azure_openai: no endpoint: pass backend_kwargs={\"azure_endpoint\": "
                "\"https://<resource>.openai.azure.com\"} or set AZURE_OPENAI_ENDPOINT.")
        if self.azure_endpoint and base_url:
            raise ConfigurationError("azure_openai: pass azure_endpoint or base_url, not both.")
        self._azure_base_url = base_url
        if model_name is None and model is None:
            model_name = azure_deployment
        super().__init__(model_name, api_key, base_url=base_url, model=model, **kwargs)

    def _default_model(self) -> str:
        return self.azure_deployment or DEFAULT_MODEL

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        if base_url:
            return base_url
        endpoint = (self.azure_endpoint or "").rstrip("/")
        if self.azure_deployment:
            return f"{endpoint}/openai/deployments/{self.azure_deployment}"
        return f"{endpoint}/openai"

    @property
    def is_official_endpoint(self) -> bool:
        return True  # Azure always needs a credential

    def _resolve_api_key(self, api_key: str | None) -> str:
        key = api_key if api_key else os.environ.get(self.api_key_env)
        if key:
            return key
        if self._azure_ad_token is not None or self._azure_ad_token_provider is not None:
            return PLACEHOLDER_API_KEY
        raise AuthenticationError(
            "No API key for the azure_openai backend: pass backend_kwargs={\"api_key\": ...} or set "
            "the AZURE_OPENAI_API_KEY environment variable (or pass azure_ad_token / "
            "azure_ad_token_provider).", backend=self.backend_name, model=self.model_name)

    def _azure_kwargs(self) -> dict[str, Any]:
        kw = self._sdk_kwargs()
        kw.pop("base_url", None)
        if self._azure_base_url:
            kw["base_url"] = self._azure_base_url
        else:
            kw["azure_endpoint"] = self.azure_endpoint
            if self.azure_deployment:
                kw["azure_deployment"] = self.azure_deployment
        kw["api_version"] = self.api_version
        if self._api_key.value == PLACEHOLDER_API_KEY:
            kw.pop("api_key", None)
            if self._azure_ad_token is not None:
                kw["azure_ad_token"] = self._azure_ad_token.value
            if self._azure_ad_token_provider is not None:
                kw["azure_ad_token_provider"] = self._azure_ad_token_provider
        return kw

    def _make_sync_client(self) -> Any:
        kw = self._azure_kwargs()
        if self._http_client is not None:
            kw["http_client"] = self._http_client
        return _sdk().AzureOpenAI(**kw)

    def _make_async_client(self) -> Any:
        kw = self._azure_kwargs()
        if self._async_http_client is not None:
            kw["http_client"] = self._async_http_client
        return _sdk().AsyncAzureOpenAI(**kw)

    def __repr__(self) -> str:
        key = "'***'" if self.has_api_key else "None"
        return (f"{type(self).__name__}(model_name={self.model_name!r}, "
                f"azure_endpoint={self.azure_endpoint!r}, azure_deployment={self.azure_deployment!r}, "
                f"api_version={self.api_version!r}, api_key={key})")

    __str__ = __repr__
